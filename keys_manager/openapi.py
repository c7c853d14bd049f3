"""OpenAPI 3.0 description of keys_manager's HTTP listener, served at ``GET /openapi.json``.

Only ``/metrics`` and ``/healthz`` are HTTP (the agent's API is a Unix socket on
purpose, see service.py); describing them anyway lets Prometheus users see the
contract and lets schemathesis check the listener answers nothing with a 5xx.
"""
from __future__ import annotations

import copy
from typing import Any

TEXT = {"type": "string"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": TEXT}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Quart-FaaS keys_manager (node agent) metrics", "version": "1.0.0"},
    "paths": {
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus exposition: "
                             "cache bytes per tier, spawns per tier, spawn latency",
                             "responses": {"200": {"description": "metrics", "content": {
                                 "text/plain": {"schema": TEXT}}}}}},
        "/healthz": {"get": {"operationId": "healthz", "summary": "200 while the agent serves",
                             "responses": {"200": {"description": "serving", "content": {
                                 "text/plain": {"schema": TEXT}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "this document",
                                  "responses": {"200": {"description": "OpenAPI 3.0",
                                                        "content": {"application/json": {
                                                            "schema": {"type": "object"}}}}}}},
    },
    "components": {"schemas": {"Error": ERROR}},
}


def document() -> dict[str, Any]:
    """The whole document (a fresh dict: callers may change it)."""
    return copy.deepcopy(DOCUMENT)
