"""The plugin's HTTP surface: ``/metrics``, ``/healthz``, ``GET /decisions`` and the
AlertManager webhook ``POST /system/alert`` (the payload OpenFaaS CE's alert rule sends),
described by ``GET /openapi.json`` (gateway_plugin/openapi.py).

A webhook never runs a cycle on the request thread: it names the pipelines
to look at and wakes the control loop, which runs cycles one at a time.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway_plugin.arrivals import strip_namespace
from gateway_plugin.openapi import MAX_ALERT_BYTES, document


class Triggers:
    """Pipelines an alert asked about, for the loop to pick up."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._functions: set[str] = set()

    def add(self, functions: set[str]) -> None:
        with self._lock:
            self._functions |= functions
        self.event.set()

    def take(self) -> set[str]:
        with self._lock:
            out, self._functions = self._functions, set()
        self.event.clear()
        return out


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


def create_app(controller, triggers: Triggers) -> Flask:
    app = Flask("gateway_plugin")
    app.config["MAX_CONTENT_LENGTH"] = MAX_ALERT_BYTES

    def error(status: int, message: str) -> Response:
        return Response(json.dumps({"error": message}), status=status,
                        mimetype="application/json")

    @app.errorhandler(413)
    def too_large(_e):
        return error(413, f"body over {MAX_ALERT_BYTES} bytes")

    @app.errorhandler(404)
    def not_found(_e):
        return error(404, "not found: /metrics, /healthz, /decisions, POST /system/alert, "
                          "/openapi.json")

    @app.errorhandler(405)
    def bad_method(e):
        resp = error(405, "method not allowed")
        resp.headers["Allow"] = ", ".join(getattr(e, "valid_methods", None) or [])  # RFC 9110
        return resp

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"ok": True, "cycles": controller.cycles, "redis": controller.store.up,
                        "leader": controller.store._leader,
                        "predictor": controller.state.predictor})

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

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(document())

    @app.post("/system/alert")
    def alert() -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            return error(400, f"malformed JSON: {e}")
        try:
            names, statuses = parse_alert(body)
        except ValueError as e:
            return error(400, str(e))
        for status, n in statuses.items():
            if n:
                controller.metrics.alerts.labels(status=status).inc(n)
        triggers.add(names)
        return Response(json.dumps({"accepted": sorted(names), **statuses}), status=202,
                        mimetype="application/json")

    return app
