"""OpenAPI 3.0 description of the scorer's HTTP API, served at ``GET /openapi.json``.

Why a hand-written document: the rules live in ``validate.py`` as plain
functions, and this file states them again as JSON Schema so that clients
(and schemathesis, which fuzzes the service from it in tests/test_fuzz_*.py)
know the bounds without reading Python.  A rule that JSON Schema cannot say
(a name that is blank after stripping, a ``colocated_job_types`` key that is
not a candidate, capacities that hold fewer jobs than the batch) is named in
a ``description``; the service answers it with a 422 like any other.
``/v1/*`` and ``GET /`` take the OpenFaaS gateway's basic-auth credentials (``basicAuth``).
"""
from __future__ import annotations

from typing import Any

from scorer.validate import (
    MAX_BATCH,
    MAX_CANDIDATES,
    MAX_COLOCATED,
    MAX_FEATURES,
    MAX_NAME,
    MIN_EPSILON,
)

NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"\S",
        "description": "a job or GPU type name; surrounding white space is stripped"}
NAMES = {"type": "array", "items": {"$ref": "#/components/schemas/Name"}}
NUMBER = {"type": "number"}


def _names(most: int, **extra: Any) -> dict[str, Any]:
    return {**NAMES, "maxItems": most, **extra}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _answer(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": _json(ref)}


UNAUTHORIZED = _answer("no or wrong basic-auth credentials (WWW-Authenticate: Basic)",
                       "Error")
LOCKED: list[dict[str, list[str]]] = [{"basicAuth": []}]

ERRORS = {
    "400": _answer("the body is not JSON (or not UTF-8, nested deeper than 32, a lone "
                   "surrogate)", "Error"),
    "401": UNAUTHORIZED,
    "413": _answer("the body is over 1 MiB", "Error"),
    "422": _answer("the JSON breaks a rule; ``field`` names it", "Error"),
}

COLOCATED = {
    "nullable": True,
    "description": "what runs beside the job: one list for every candidate (the original "
                   "API's form) or an object gpu_type -> list (each key must be one of "
                   "candidate_gpu_types)",
    "oneOf": [_names(MAX_COLOCATED),
              {"type": "object", "additionalProperties": _names(MAX_COLOCATED)}],
}

FEATURES = {
    "type": "object", "nullable": True, "maxProperties": MAX_FEATURES,
    "description": f"free-form job features (JobFeatures): names up to {MAX_NAME} characters",
    "additionalProperties": {"oneOf": [{"type": "number"}, {"type": "boolean"},
                                       {"type": "string", "maxLength": MAX_NAME}]},
}

TERMS = {"type": "object", "required": ["mean", "uncertainty", "information_gain", "interference"],
         "properties": {k: NUMBER for k in ("mean", "uncertainty", "information_gain",
                                            "interference")}}

CANDIDATE = {
    "type": "object",
    "required": ["rank", "gpu_type", "observations", "mu", "sigma", "sigma2", "tau2",
                 "information_gain", "slowdown", "interference_penalty", "cost",
                 "exploit_cost", "terms"],
    "properties": {"rank": {"type": "integer", "minimum": 1}, "gpu_type": {"type": "string"},
                   "observations": {"type": "integer", "minimum": 0},
                   **{k: NUMBER for k in ("mu", "sigma", "sigma2", "tau2", "information_gain",
                                          "slowdown", "interference_penalty", "cost",
                                          "exploit_cost")},
                   "terms": TERMS},
}

SCHEMAS: dict[str, Any] = {
    "Name": NAME,
    "Error": {"type": "object", "required": ["error", "field"],
              "properties": {"error": {"type": "string"},
                             "field": {"type": "string", "nullable": True}}},
    "ScoreRequest": {
        "type": "object", "additionalProperties": False,
        "required": ["job_type", "candidate_gpu_types"],
        "properties": {"job_type": {"$ref": "#/components/schemas/Name"},
                       "candidate_gpu_types": _names(MAX_CANDIDATES, minItems=1,
                                                     uniqueItems=True),
                       "colocated_job_types": COLOCATED, "features": FEATURES,
                       "dry_run": {"type": "boolean", "default": False}},
    },
    "ScoreResponse": {
        "type": "object",
        "required": ["job_type", "selected_gpu_type", "exploratory", "capped", "reason",
                     "candidates", "exploration_ratio", "exploration_cap", "features",
                     "recorded", "persisted"],
        "properties": {"job_type": {"type": "string"}, "selected_gpu_type": {"type": "string"},
                       "exploratory": {"type": "boolean"}, "capped": {"type": "boolean"},
                       "reason": {"type": "string"},
                       "candidates": {"type": "array", "minItems": 1, "items": CANDIDATE},
                       "exploration_ratio": NUMBER, "exploration_cap": NUMBER,
                       "features": {"type": "object"}, "recorded": {"type": "boolean"},
                       "persisted": {"type": "boolean"}},
    },
    "ObserveRequest": {
        "type": "object", "additionalProperties": False,
        "required": ["job_type", "gpu_type", "measured_runtime_s"],
        "properties": {"job_type": {"$ref": "#/components/schemas/Name"},
                       "gpu_type": {"$ref": "#/components/schemas/Name"},
                       "measured_runtime_s": {"type": "number", "exclusiveMinimum": True,
                                              "minimum": 0, "maximum": 1e9},
                       "colocated_job_types": _names(MAX_COLOCATED, nullable=True),
                       "features": FEATURES},
    },
    "ObserveResponse": {
        "type": "object",
        "required": ["job_type", "gpu_type", "learned", "observations", "mu", "sigma2", "sigma",
                     "tau2", "information_gain", "slowdowns", "persisted"],
        "properties": {"job_type": {"type": "string"}, "gpu_type": {"type": "string"},
                       "learned": {"type": "string"},
                       "observations": {"type": "integer", "minimum": 0},
                       **{k: NUMBER for k in ("mu", "sigma2", "sigma", "tau2",
                                              "information_gain")},
                       "slowdowns": {"type": "object", "additionalProperties": NUMBER},
                       "persisted": {"type": "boolean"}},
    },
    "AssignRequest": {
        "type": "object", "additionalProperties": False,
        "required": ["jobs", "candidate_gpu_types"],
        "properties": {
            "jobs": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {
                "type": "object", "additionalProperties": False, "required": ["job_type"],
                "properties": {"job_type": {"$ref": "#/components/schemas/Name"},
                               "colocated_job_types": COLOCATED, "features": FEATURES}}},
            "candidate_gpu_types": _names(MAX_CANDIDATES, minItems=1, uniqueItems=True),
            "capacities": {"type": "object", "nullable": True,
                           "description": "gpu_type -> jobs it takes (absent: 0); together "
                                          "they must hold the batch",
                           "additionalProperties": {"type": "integer", "minimum": 0}},
            "epsilon": {"type": "number", "minimum": MIN_EPSILON, "maximum": 10,
                        "default": 0.05,
                        "description": "entropic regularisation, relative to the cost spread"},
            "max_iter": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 2000},
        },
    },
    "AssignResponse": {
        "type": "object",
        "required": ["assignment", "total_cost", "plan", "candidate_gpu_types", "capacities",
                     "iterations", "converged", "max_row_error", "epsilon"],
        "properties": {
            "assignment": {"type": "array", "items": {
                "type": "object", "required": ["index", "job_type", "gpu_type", "cost"],
                "properties": {"index": {"type": "integer"}, "job_type": {"type": "string"},
                               "gpu_type": {"type": "string"}, "cost": NUMBER}}},
            "total_cost": NUMBER,
            "plan": {"type": "array", "items": {"type": "array", "items": NUMBER}},
            "candidate_gpu_types": {"type": "array", "items": {"type": "string"}},
            "capacities": {"type": "object", "nullable": True,
                           "additionalProperties": {"type": "integer"}},
            "iterations": {"type": "integer"}, "converged": {"type": "boolean"},
            "max_row_error": NUMBER, "epsilon": NUMBER,
        },
    },
    "Health": {
        "type": "object",
        "required": ["ok", "db", "store_up", "state_loaded", "unsaved_changes",
                     "pending_events", "last_error", "message"],
        "properties": {"ok": {"type": "boolean"}, "db": {"type": "string"},
                       "store_up": {"type": "boolean"}, "state_loaded": {"type": "boolean"},
                       "unsaved_changes": {"type": "integer"},
                       "pending_events": {"type": "integer"},
                       "last_error": {"type": "string", "nullable": True},
                       "message": {"type": "string"}},
    },
    "Index": {"type": "object", "required": ["service", "config", "objective", "endpoints"],
              "properties": {"service": {"type": "string"}, "config": {"type": "object"},
                             "objective": {"type": "string"},
                             "endpoints": {"type": "array", "items": {"type": "string"}}}},
}


def _post(summary: str, request: str, response: str) -> dict[str, Any]:
    return {"post": {"summary": summary, "operationId": request.removesuffix("Request"),
                     "security": LOCKED,
                     "requestBody": {"required": True, "content": _json(request)},
                     "responses": {"200": _answer("done", response), **ERRORS}}}


def _get(summary: str, op: str, responses: dict[str, Any],
         security: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    extra = {"security": security} if security else {}
    return {"get": {"summary": summary, "operationId": op, "responses": responses, **extra}}


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh dict: callers may change it)."""
    import copy

    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {"title": "Quart-FaaS scorer (information-theoretic scheduler)",
                 "version": "1.0.0",
                 "description": "cost = mu + lambda*sigma - beta*IG + gamma*interference "
                                "(Eq. 1); errors are {error, field}"},
        "paths": {
            "/v1/score": _post("rank candidate GPU types for a job (records the decision "
                               "unless dry_run)", "ScoreRequest", "ScoreResponse"),
            "/v1/observe": _post("learn from a measured runtime", "ObserveRequest",
                                 "ObserveResponse"),
            "/v1/assign": _post("place a batch of jobs at once (Sinkhorn)", "AssignRequest",
                                "AssignResponse"),
            "/healthz": _get("200 while serving; says whether state is persisted", "healthz",
                             {"200": _answer("serving", "Health")}),
            "/metrics": _get("Prometheus text exposition", "metrics", {"200": {
                "description": "metrics", "content": {"text/plain": {"schema": {
                    "type": "string"}}}}}),
            "/": _get("the configuration in use", "index", {
                "200": _answer("config", "Index"), "401": UNAUTHORIZED}, LOCKED),
            "/openapi.json": _get("this document", "openapi", {"200": {
                "description": "OpenAPI 3.0", "content": {"application/json": {"schema": {
                    "type": "object"}}}}}),
        },
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basicAuth": {"type": "http", "scheme": "basic",
                          "description": "the OpenFaaS gateway's admin credentials"}}},
    })
