"""OpenAPI 3.0 description of the plugin's HTTP surface, served at ``GET /openapi.json``.

Why: the webhook is called by AlertManager and the rest by people and
Prometheus; a machine-readable contract lets a client check its payload and
lets schemathesis fuzz the plugin (tests/test_fuzz_*.py, checks/fuzz.py).
The alert body follows upstream's ``PrometheusAlert`` (openfaas/faas
api-docs/spec.openapi.yml), restricted to what ``parse_alert`` requires: a
non-empty ``alerts`` list whose items carry ``labels.function_name`` and a
``status`` (the item's, else the group's) of ``firing`` or ``resolved``.  ``/decisions``
and ``/system/alert`` take the gateway's basic-auth credentials (``basicAuth``).
"""
from __future__ import annotations

import copy
from typing import Any

MAX_ALERT_BYTES = 1 << 20  # the webhook's body limit; app.py enforces it (413)

STATUS = {"type": "string", "enum": ["firing", "resolved"]}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
NUM = {"type": "number", "nullable": True}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "PrometheusAlert": {
        "type": "object",
        "description": "AlertManager webhook payload (upstream PrometheusAlert); fields not "
                       "listed are accepted and ignored",
        "required": ["alerts"],
        "properties": {
            "status": STATUS,
            "alerts": {"type": "array", "minItems": 1,
                       "items": {"$ref": "#/components/schemas/PrometheusInnerAlert"}},
        },
    },
    "PrometheusInnerAlert": {
        "type": "object",
        "description": "one alert; without its own status it takes the payload's",
        "required": ["labels"],
        "properties": {
            "status": STATUS,
            "labels": {"type": "object", "required": ["function_name"],
                       "description": "labels other than function_name are ignored",
                       "properties": {"function_name": {
                                          "type": "string", "pattern": r"\S",
                                          "description": "name or name.namespace"}}},
        },
    },
    "AlertAccepted": {
        "type": "object", "required": ["accepted", "firing", "resolved"],
        "properties": {"accepted": {"type": "array", "items": {"type": "string"},
                                    "description": "functions whose pipelines the next "
                                                   "cycle looks at"},
                       "firing": {"type": "integer", "minimum": 0},
                       "resolved": {"type": "integer", "minimum": 0},
                       "cycle_in_s": {"type": "number", "minimum": 0,
                                      "description": "when the cycle covering them runs: at "
                                                     "most one alert cycle per "
                                                     "QUART_ALERT_MIN_INTERVAL_S"},
                       "coalesced": {"type": "boolean",
                                     "description": "merged into an alert cycle already "
                                                    "waiting"}},
    },
    "Health": {
        "type": "object", "required": ["ok", "cycles", "redis", "leader", "predictor",
                                       "missing", "problems", "last_cycle_age_s", "period_s"],
        "properties": {"ok": {"type": "boolean"}, "cycles": {"type": "integer"},
                       "redis": {"type": "boolean", "description": "Redis answered last time"},
                       "leader": {"type": "boolean"},
                       "predictor": {"type": "string", "description": "gat or a fallback"},
                       "missing": {"type": "array", "items": {
                           "type": "string", "enum": ["gateway", "prometheus", "redis"]},
                           "description": "inputs the last cycle went without"},
                       "problems": {"type": "array", "items": {"type": "string"}},
                       "last_cycle_age_s": {"type": "number", "nullable": True,
                                            "description": "null: no cycle completed yet"},
                       "period_s": {"type": "number"}},
    },
    "Liveness": {
        "type": "object", "required": ["ok", "last_cycle_age_s", "period_s"],
        "properties": {"ok": {"type": "boolean"}, "last_cycle_age_s": {"type": "number"},
                       "period_s": {"type": "number"}},
    },
    "PolicyStep": {
        "type": "object", "nullable": True,
        "description": "the last policy step that moved the value, as it reported itself "
                       "(null: no step moved it)",
        "required": ["policy", "step", "reason"],
        "properties": {"policy": {"type": "string"},
                       "step": {"type": "string", "description": "e.g. mmc, pid, band, "
                                "over_budget, down_delay, no_data, headroom, release, cap, "
                                "function_labels, increment, rollback, give_back"},
                       "reason": {"type": "string"}},
    },
    "Predictor": {
        "type": "object",
        "required": ["predictor", "reason", "rounds"],
        "properties": {
            "predictor": {"type": "string", "description": "gat, qna, copy_upstream, ..."},
            "reason": {"type": "string"},
            "rounds": {"type": "array", "items": {"type": "object", "properties": {
                "trained_at": {"type": "number"}, "predictor": {"type": "string"},
                "validation_mae": {"type": "object",
                                   "additionalProperties": {"type": "number"}},
                "holdout": {"type": "string"}, "samples": {"type": "integer"}}}}}},
    "Decision": {
        "type": "object",
        "description": "one stage's decision in one control cycle (newest first)",
        "required": ["t", "trigger", "pipeline", "function", "from", "replicas", "policy",
                     "action", "reason"],
        "properties": {
            "t": {"type": "number"}, "trigger": {"type": "string"},
            "pipeline": {"type": "string"}, "function": {"type": "string"},
            "from": {"type": "integer"}, "replicas": {"type": "integer"}, "cpu": NUM,
            "policy": {"type": "string",
                       "description": "corrector, smoother, bounds, idle (scale to zero) or "
                                      "cpu: whose step set the count (or moved the CPU); "
                                      "none, or hold"},
            "step": {"$ref": "#/components/schemas/PolicyStep"},
            "cpu_step": {"$ref": "#/components/schemas/PolicyStep"},
            "action": {"type": "string"},
            "predictor": {"type": "string"}, "critical": {"type": "boolean"},
            "reason": {"type": "string"}, "error": {"type": "string"}, "budget_s": NUM,
            "predicted_cv": NUM, "inputs": {"type": "object", "additionalProperties": NUM},
            "actuator": {"type": "string", "enum": ["gateway", "kubernetes", "pods"],
                         "description": "QUART_ACTUATOR that applied it"},
            "speeds": {"type": "array", "items": {"type": "string",
                                                  "enum": ["workers", "cpu", "pods"]},
                       "description": "the means used: workers in pods, CPU in place, pods"},
            "actuation": {"type": "string",
                          "description": "what the actuator did or refused, and why"},
            "pool": {"type": "integer", "nullable": True,
                     "description": "workers keys_manager keeps pre-forked for the function "
                                    "(the forecast of its next scale-up; null: no "
                                    "QUART_KEYS_SOCKET)"},
        },
    },
}

UNAUTHORIZED = _error("no or wrong basic-auth credentials (WWW-Authenticate: Basic)")
LOCKED: list[dict[str, list[str]]] = [{"basicAuth": []}]

PATHS: dict[str, Any] = {
    "/healthz": {"get": {"operationId": "healthz",
                         "summary": "readiness: the loop runs and has its inputs",
                         "responses": {
                             "200": _json({"$ref": "#/components/schemas/Health"}, "ok"),
                             "503": _json({"$ref": "#/components/schemas/Health"},
                                          "the last cycle is older than three periods, or an "
                                          "input (gateway, Prometheus, Redis) is missing")}}},
    "/livez": {"get": {"operationId": "livez",
                       "summary": "liveness: a cycle completed within three periods",
                       "responses": {
                           "200": _json({"$ref": "#/components/schemas/Liveness"}, "ok"),
                           "503": _json({"$ref": "#/components/schemas/Liveness"},
                                        "the loop is stuck or its cycles fail")}}},
    "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text exposition",
                         "responses": {"200": {"description": "metrics", "content": {
                             "text/plain": {"schema": {"type": "string"}}}}}}},
    "/decisions": {"get": {
        "operationId": "decisions", "summary": "the latest decision records from Redis",
        "security": LOCKED,
        "parameters": [{"name": "n", "in": "query", "required": False,
                        "description": "how many (clamped to 1..1000)",
                        "schema": {"type": "integer", "default": 100}}],
        "responses": {"200": _json({"type": "array",
                                    "items": {"$ref": "#/components/schemas/Decision"}},
                                   "newest first"),
                      "400": _error("n is not an integer"), "401": UNAUTHORIZED}}},
    "/predictor": {"get": {
        "operationId": "predictor",
        "summary": "the CV predictor in use and every validated training round (Redis)",
        "security": LOCKED,
        "responses": {"200": _json({"$ref": "#/components/schemas/Predictor"},
                                   "rounds oldest first, the last 200"),
                      "401": UNAUTHORIZED}}},
    "/system/alert": {"post": {
        "operationId": "ScaleAlert",
        "summary": "AlertManager webhook: wake the control loop for these functions' pipelines",
        "security": LOCKED,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PrometheusAlert"}}}},
        "responses": {"202": _json({"$ref": "#/components/schemas/AlertAccepted"},
                                   "the next cycle runs for these pipelines"),
                      "400": _error("not JSON (or not UTF-8, nested too deep, a lone "
                                    "surrogate), or not an alert payload"),
                      "401": UNAUTHORIZED,
                      "404": _error("a function the gateway does not list"),
                      "413": _error(f"body over {MAX_ALERT_BYTES} bytes"),
                      "503": _error("the gateway's functions are not known yet (starting, "
                                    "or a standby instance); Retry-After")}}},
    "/openapi.json": {"get": {"operationId": "openapi", "summary": "this document",
                              "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}},
}


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh dict: callers may change it)."""
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {"title": "Quart-FaaS gateway plugin", "version": "1.0.0",
                 "description": "the autoscaling plugin beside the OpenFaaS gateway"},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basicAuth": {"type": "http", "scheme": "basic",
                          "description": "the OpenFaaS gateway's admin credentials"}}},
    })
