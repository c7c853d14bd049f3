"""The plugin's HTTP surface: ``/metrics``, ``/healthz``, ``/livez``, ``GET /decisions`` and
the AlertManager webhook ``POST /system/alert`` (the payload OpenFaaS CE's alert rule sends),
described by ``GET /openapi.json`` (gateway_plugin/openapi.py).

Doors (issue 18): ``/decisions`` (reveals every stage's load and decisions) and
``/system/alert`` (starts control cycles) take the OpenFaaS gateway's basic-auth
credentials, as the gateway's own ``/system/alert`` does; AlertManager sends them
(gateway_plugin/alerting/alertmanager.yml, ``http_config.basic_auth``).  Open, and why:
``/healthz`` and ``/livez`` (the kubelet's probes carry no credentials; they tell whether the
loop runs and which input is missing, nothing of the load), ``/metrics`` (Prometheus scrapes
it without credentials, like the gateway's own metrics port) and ``/openapi.json`` (the
contract, no state).

A webhook never runs a cycle on the request thread: it names the functions whose pipelines
to look at, and the loop runs cycles one at a time, alerts coalesced (gateway_plugin/pacing.py).
An alert naming a function the gateway does not list is a 404; before the plugin has listed
the gateway's functions at all (starting, or a standby that never acts) it is a 503.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import webguard
from contracts.basic_auth import BasicAuth
from gateway_plugin.arrivals import strip_namespace
from gateway_plugin.health import Health
from gateway_plugin.openapi import MAX_ALERT_BYTES, document
from gateway_plugin.pacing import Triggers

__all__ = ["MAX_ALERT_BYTES", "Triggers", "create_app", "parse_alert"]

PUBLIC = ("healthz", "livez", "metrics", "openapi_json")
error = webguard.json_error


def parse_alert(body: Any) -> tuple[set[str], dict[str, int]]:
    """Function names and status counts from an AlertManager webhook; ValueError if malformed."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object (AlertManager webhook format)")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise ValueError("'alerts' must be a non-empty list")
    names, statuses = set(), {"firing": 0, "resolved": 0}
    # the group's status stands in for an alert without its own: checked even when unused
    if "status" in body and body["status"] not in ("firing", "resolved"):
        raise ValueError("'status' must be 'firing' or 'resolved'")
    for i, a in enumerate(alerts):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict):
            raise ValueError(f"alerts[{i}] must be an object with 'labels'")
        fn = a["labels"].get("function_name")
        if not isinstance(fn, str) or not fn.strip():
            raise ValueError(f"alerts[{i}].labels.function_name must be a non-empty string")
        status = a.get("status", body.get("status"))
        if not isinstance(status, str) or status not in statuses:  # a list is unhashable
            raise ValueError(f"alerts[{i}].status must be 'firing' or 'resolved'")
        statuses[status] += 1
        names.add(strip_namespace(fn.strip()))
    return names, statuses


def create_app(controller, triggers: Triggers, *, auth: BasicAuth | None,
               health: Health | None = None) -> Flask:
    """``auth`` None only when basic_auth=false was asked for (webguard.require)."""
    app = Flask("gateway_plugin")
    app.config["MAX_CONTENT_LENGTH"] = MAX_ALERT_BYTES
    health = health or Health(triggers.period_s)
    webguard.install(app, auth, PUBLIC)

    @app.errorhandler(413)
    def too_large(_e):
        return error(413, f"body over {MAX_ALERT_BYTES} bytes")

    @app.errorhandler(404)
    def not_found(_e):
        return error(404, "not found: /metrics, /healthz, /livez, /decisions, /predictor, "
                          "POST /system/alert, /openapi.json")

    _health_routes(app, controller, health)
    _read_routes(app, controller)
    _alert_route(app, controller, triggers)
    return app


def _health_routes(app: Flask, controller: Any, health: Health) -> None:
    """/healthz (ready: cycles run, Redis answers) and /livez (alive: cycles not stale)."""

    @app.get("/healthz")
    def healthz() -> Response:
        ok, body = health.report(controller.store.up)
        body = {"cycles": controller.cycles, "redis": controller.store.up,
                "leader": controller.store._leader, "predictor": controller.state.predictor,
                **body}
        return Response(json.dumps(body), status=200 if ok else 503,
                        mimetype="application/json")

    @app.get("/livez")
    def livez() -> Response:
        stale, age = health.stale(health.clock())
        body = {"ok": not stale, "last_cycle_age_s": round(age, 3), "period_s": health.period_s}
        return Response(json.dumps(body), status=503 if stale else 200,
                        mimetype="application/json")


def _read_routes(app: Flask, controller: Any) -> None:
    """/metrics, /decisions, /predictor and /openapi.json."""

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(controller.metrics.registry),
                        content_type=CONTENT_TYPE_LATEST)

    @app.get("/decisions")
    def decisions() -> Response:
        try:
            n = max(1, min(1000, int(request.args.get("n", "100"))))
        except ValueError:
            return error(400, "n must be an integer")
        return jsonify(controller.store.decisions(n))

    @app.get("/predictor")
    def predictor() -> Response:
        """The CV predictor in use and every validated training round (kept in Redis with
        the state): what a comparison reports as the GAT's selections and errors."""
        meta = controller.gat_meta or {}
        return jsonify({"predictor": controller.state.predictor,
                        "reason": controller.state.predictor_reason,
                        "rounds": list(meta.get("rounds", []))})

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(document())


def _alert_route(app: Flask, controller: Any, triggers: Triggers) -> None:
    """POST /system/alert: AlertManager's webhook brings the next cycle forward."""

    @app.post("/system/alert")
    def alert() -> Response:
        try:
            names, statuses = parse_alert(webguard.parse_json(request.get_data() or b"null"))
        except ValueError as e:  # BadJSON is one
            return error(400, str(e))
        refused = _refuse(controller, names, triggers.period_s)
        if refused is not None:
            return refused
        for status, n in statuses.items():
            if n:
                controller.metrics.alerts.labels(status=status).inc(n)
        in_s, coalesced = triggers.add(names)
        return Response(json.dumps({"accepted": sorted(names), **statuses,
                                    "cycle_in_s": round(in_s, 3), "coalesced": coalesced}),
                        status=202, mimetype="application/json")


def _refuse(controller, names: set[str], period_s: float) -> Response | None:
    """503 before the gateway's functions are known, 404 for names it does not list."""
    known = controller.functions
    if known is None:
        resp = error(503, "the plugin has not listed the gateway's functions yet (starting, "
                          "or a standby: the leader runs the cycles)")
        resp.headers["Retry-After"] = str(max(1, round(period_s)))
        return resp
    unknown = sorted(names - known)
    if unknown:
        return error(404, f"no such function on the gateway: {', '.join(unknown)}",
                     unknown=unknown)
    return None
