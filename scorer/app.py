"""The scorer's HTTP surface (the seed's API; Flask, served by waitress in cli.py).

  POST /v1/score    {job_type, features, candidate_gpu_types, colocated_job_types, dry_run?}
                    -> candidates ranked by cost with every term of Eq. 1
  POST /v1/observe  {job_type, gpu_type, measured_runtime_s, colocated_job_types}
                    -> the updated belief (mu, sigma^2, IG) and learned slowdowns
  POST /v1/assign   {jobs: [{job_type, colocated_job_types}], candidate_gpu_types,
                     capacities?, epsilon?, max_iter?} -> Sinkhorn plan and assignment
  GET  /metrics     Prometheus text
  GET  /healthz     200 while serving; says whether state is being persisted
  GET  /            the configuration in use

Doors: ``/v1/*`` (they change what the scorer has learned, or reveal it) and ``GET /`` (the
configuration) take the OpenFaaS gateway's basic-auth credentials (gateway_plugin/webguard.py),
401 with ``WWW-Authenticate`` without them.  ``/healthz``, ``/metrics`` and ``/openapi.json``
stay open: probes and Prometheus carry no credentials, and none of them changes anything.

Errors are answers: non-JSON (not UTF-8, nested deeper than 32, a lone surrogate) -> 400,
a JSON body that breaks a rule -> 422, both ``{"error": ..., "field": ...}``; every other
HTTP error is JSON too, anything unexpected is logged and answered with a JSON 500, and the
service goes on.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import webguard
from contracts.basic_auth import BasicAuth
from scorer import openapi, validate
from scorer.metrics import registry_for
from scorer.service import ScoringService

log = logging.getLogger("scorer")

MAX_BODY = 1 << 20
PUBLIC = ("healthz", "metrics", "openapi_json")
ENDPOINTS = ["POST /v1/score", "POST /v1/observe", "POST /v1/assign", "GET /metrics",
             "GET /healthz", "GET /", "GET /openapi.json"]


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, allow_nan=False, default=_nan_safe) + "\n",
                    status=status, mimetype="application/json")


def _nan_safe(o: Any) -> Any:  # numpy scalars
    return o.item() if hasattr(o, "item") else str(o)


def _error(status: int, message: str, field: str | None = None) -> Response:
    return _json(status, {"error": message, "field": field})


def create_app(service: ScoringService, *, auth: BasicAuth | None) -> Flask:
    """``auth`` None only when basic_auth=false was asked for (webguard.require)."""
    app = Flask("scorer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    webguard.install(app, auth, PUBLIC, error=_error)

    @app.errorhandler(404)
    def not_found(_e: Exception) -> Response:
        return _error(404, f"not found; endpoints: {', '.join(ENDPOINTS)}")

    @app.errorhandler(413)
    def too_large(_e: Exception) -> Response:
        return _error(413, f"body over {MAX_BODY} bytes", "body")

    _scoring_routes(app, service)
    _info_routes(app, service)
    return app


def _body() -> Any:
    try:
        return webguard.parse_json(request.get_data())
    except webguard.BadJSON as e:
        raise _BadJSON(str(e)) from None


def _endpoint(parse: Callable[[Any], Any], act: Callable[[Any], dict[str, Any]]) -> Response:
    """Validate the body with ``parse`` (400 not JSON, 422 invalid), answer ``act``'s JSON."""
    try:
        req = parse(_body())
    except _BadJSON as e:
        return _error(400, f"body is not JSON: {e}", "body")
    except validate.Invalid as e:
        return _error(422, f"{e.field}: {e.message}", e.field)
    return _json(200, act(req))


def _scoring_routes(app: Flask, service: ScoringService) -> None:
    @app.post("/v1/score")
    def score() -> Response:
        return _endpoint(validate.score_request, service.score)

    @app.post("/v1/observe")
    def observe() -> Response:
        return _endpoint(validate.observe_request, service.observe)

    @app.post("/v1/assign")
    def assign() -> Response:
        return _endpoint(validate.assign_request, service.assign)


def _info_routes(app: Flask, service: ScoringService) -> None:
    registry = registry_for(service)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json(200, service.status())

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return _json(200, openapi.document())

    @app.get("/")
    def index() -> Response:
        return _json(200, {
            "service": "quart-faas scorer (information-theoretic scheduler)",
            "config": service.cfg.public(),
            "objective": "cost = mu + lambda*sqrt(sigma^2) - beta*IG + gamma*interference, "
                         "IG = 0.5*log(1 + sigma^2/tau^2)",
            "endpoints": ENDPOINTS,
        })


class _BadJSON(ValueError):
    pass
