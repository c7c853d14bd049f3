"""OpenAPI 3.0 descriptions of the gateway surface, the provider API and the metrics port.

Each listener serves its own document at ``GET /openapi.json`` (outside
``/system/``, so without basic auth: a description is not a secret).  Shapes
follow upstream where upstream defines them (openfaas/faas
``api-docs/spec.openapi.yml``; faas-provider ``types``): FunctionDeployment,
FunctionStatus, ScaleServiceRequest, DeleteFunctionRequest, the provider's
InfoResponse, ``/function/{name}`` and ``/function/{name}.{namespace}``.
Where we differ, the document says what we do: deploy/update/delete/scale
answer 202 as faas-netes does, a deployment's image must be in the local image
store (local_provider/images.py; replicas are processes, not containers), and
``/system/quart/*`` are ours.  The schemas of the bodies are generated from the
pydantic models that validate them (local_provider/types.py, secret_store.py,
info.py, logs.py; contracts/wire.py adapts them to OpenAPI 3.0), so the document
and the 400s cannot drift apart.  Rules JSON Schema cannot state (an integer
label, a CPU quantity's value) are in the models' descriptions.
"""
from __future__ import annotations

import copy
from typing import Any

from pydantic import TypeAdapter

from contracts.wire import Error, openapi30, openapi_schemas
from local_provider.config import NAMESPACE
from local_provider.info import GatewayInfo, ProviderInfo
from local_provider.logs import LogMessage
from local_provider.secret_store import Secret, SecretName
from local_provider.types import (
    DeleteFunctionRequest,
    FunctionDeployment,
    FunctionStatus,
    Name,
    ScaleServiceRequest,
)

S = "#/components/schemas/"
STR = {"type": "string"}
STR_MAP = {"type": "object", "additionalProperties": STR}
NAME = openapi30(TypeAdapter(Name).json_schema())
INVOKE_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": S + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


ACCEPTED = {"description": "accepted; the reconcile loop makes it so"}
UNAUTHORIZED = _err("basic auth credentials missing or wrong")
TOO_LARGE = _err("the body is larger than QUART_MAX_BODY_BYTES")
OK_TEXT = {"description": "serving", "content": {"text/plain": {"schema": STR}}}
METRICS = {"description": "Prometheus text exposition", "content": {"text/plain": {
    "schema": STR}}}
SELF = _json({"type": "object"}, "this document (OpenAPI 3.0)")

# The bodies we parse and the answers we build are pydantic models: their schemas come
# from them.  The three below are dicts other modules assemble (cpulimit, nodes, registry).
SCHEMAS: dict[str, Any] = {
    **openapi_schemas(Error, FunctionDeployment, FunctionStatus, DeleteFunctionRequest,
                      ScaleServiceRequest, ProviderInfo, GatewayInfo, Secret, SecretName,
                      LogMessage),
    "Capabilities": {
        "type": "object", "required": ["cpu_limits", "max_replicas"],
        "properties": {"max_replicas": {"type": "integer"}, "cpu_limits": {
            "type": "object", "required": ["available", "cgroup", "path", "reason"],
            "properties": {"available": {"type": "boolean"},
                           "cgroup": {"type": "string", "nullable": True},
                           "path": {"type": "string", "nullable": True},
                           "reason": {"type": "string", "nullable": True}}}}},
    "Node": {
        "type": "object", "required": ["name", "up"],
        "properties": {"name": STR, "up": {"type": "boolean"},
                       "memory_threshold_bytes": {"type": "integer"},
                       "t1_bytes": {"type": "integer"}, "capacity": {"type": "number"},
                       "replicas": {"type": "object",
                                    "additionalProperties": {"type": "integer"}},
                       "labels": STR_MAP}},
    "FunctionStats": {
        "type": "object",
        "required": ["inflight", "queueDepth", "availableReplicas", "replicas",
                     "invocationCount", "instances"],
        "properties": {**{k: {"type": "integer", "minimum": 0} for k in (
            "inflight", "queueDepth", "availableReplicas", "replicas", "invocationCount",
            "rejectedQueueFull", "rejectedTimeout", "ejections")},
            "instances": {"type": "array", "items": {"type": "object"}}}},
}


def _namespace_query() -> dict[str, Any]:
    return {"name": "namespace", "in": "query", "required": False,
            "schema": {"type": "string", "enum": ["", NAMESPACE]},
            "description": f"only {NAMESPACE} exists here"}


def _path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or STR}


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(ref)}}}


def _op(op_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary, "tags": ["system"],
            "security": [{"basicAuth": []}], "responses": {**responses, "401": UNAUTHORIZED},
            **extra}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": name == "name", "schema": schema,
            "description": description}


def secrets_and_logs() -> dict[str, Any]:
    """faas-provider's secrets and logs APIs (local_provider/secret_store.py, logs.py)."""
    bad = _err("a field breaks a rule; the message names it, nothing changed")
    body = _body("Secret")
    log_query = [
        _query("name", NAME, "the function"), _namespace_query(),
        _query("instance", STR, "one replica (<function>-<index>), default all"),
        _query("tail", {"type": "integer"}, "the last N lines; <= 0: all"),
        _query("since", {"type": "string", "format": "date-time"}, "lines from then on"),
        _query("follow", {"type": "boolean"}, "stream new lines until QUART_LOG_FOLLOW_S")]
    ndjson = {"description": "NDJSON, one LogMessage per line", "content": {
        "application/x-ndjson": {"schema": _ref("LogMessage")}}}
    return {
        "/system/secrets": {
            "get": _op("ListSecrets", "secret names (never values)",
                       {"200": _json({"type": "array", "items": _ref("SecretName")}, "names"),
                        "400": _err("namespace is not " + NAMESPACE)},
                       parameters=[_namespace_query()]),
            "post": _op("CreateSecret", "create a secret (a 0600 file)",
                        {"202": ACCEPTED, "400": bad, "409": _err("it exists; PUT it"),
                         "413": TOO_LARGE}, requestBody=body),
            "put": _op("UpdateSecret", "replace a secret's value",
                       {"202": ACCEPTED, "400": bad, "404": _err("no such secret"),
                        "413": TOO_LARGE}, requestBody=body),
            "delete": _op("DeleteSecret", "remove a secret",
                          {"202": ACCEPTED, "400": bad, "404": _err("no such secret"),
                           "413": TOO_LARGE}, requestBody=body)},
        "/system/logs": {"get": _op(
            "GetLogs", "replica stdout/stderr lines", {"200": ndjson, "400": bad,
                                                      "404": _err("no such function")},
            parameters=log_query)},
    }


def system_paths(gateway: bool = False) -> dict[str, Any]:
    """``/system/*``: the faas-provider REST API (also reachable through the gateway, whose
    ``/system/info`` answers upstream's GatewayInfo around the provider's InfoResponse)."""
    bad = _err("a field breaks a rule; the message names it, nothing changed")
    ns_bad = _err("namespace is not " + NAMESPACE)
    info = (_json(_ref("GatewayInfo"), "gateway and provider") if gateway
            else _json(_ref("ProviderInfo"), "info"))
    return {**secrets_and_logs(),
        "/system/functions": {
            "get": _op("GetFunctions", "list deployed functions",
                       {"200": _json({"type": "array", "items": _ref("FunctionStatus")},
                                     "deployed functions"), "400": ns_bad},
                       parameters=[_namespace_query()]),
            "post": _op("DeployFunction", "deploy a new function",
                        {"202": ACCEPTED, "400": bad, "409": _err("the name exists; PUT it"),
                         "413": TOO_LARGE}, requestBody=_body("FunctionDeployment")),
            "put": _op("UpdateFunction", "update a function (a new env/handler rolls replicas)",
                       {"202": ACCEPTED, "400": bad, "404": _err("no such function"),
                        "413": TOO_LARGE}, requestBody=_body("FunctionDeployment")),
            "delete": _op("DeleteFunction", "remove a function and stop its replicas",
                          {"202": ACCEPTED, "400": bad, "404": _err("no such function"),
                           "413": TOO_LARGE},
                          requestBody=_body("DeleteFunctionRequest"),
                          parameters=[_namespace_query()]),
        },
        "/system/function/{functionName}": {"get": _op(
            "GetFunctionStatus", "one function's status",
            {"200": _json(_ref("FunctionStatus"), "the function"), "400": ns_bad,
             "404": _err("no such function")},
            parameters=[_path_param("functionName"), _namespace_query()])},
        "/system/scale-function/{functionName}": {"post": _op(
            "ScaleFunction", "set the desired replica count",
            {"202": ACCEPTED, "400": bad, "404": _err("no such function"), "413": TOO_LARGE},
            parameters=[_path_param("functionName"), _namespace_query()],
            requestBody=_body("ScaleServiceRequest"))},
        "/system/info": {"get": _op("GetSystemInfo", "provider name, orchestration, version",
                                    {"200": info, "502": _err("the provider did not answer")}
                                    if gateway else {"200": info})},
        "/system/namespaces": {"get": _op("ListNamespaces", "namespaces (one here)", {
            "200": _json({"type": "array", "items": STR}, "namespaces")})},
        "/system/quart/capabilities": {"get": _op(
            "QuartCapabilities", "ours: what this provider enforces",
            {"200": _json(_ref("Capabilities"), "capabilities")})},
        "/system/quart/nodes": {"get": _op(
            "QuartNodes", "ours: the simulated nodes (QUART_NODES)",
            {"200": _json({"type": "array", "items": _ref("Node")}, "nodes")})},
        "/system/quart/nodes/{nodeName}/fail": {"post": _op(
            "QuartFailNode", "ours: simulate a node failure",
            {"200": _json({"type": "object"}, "what was stopped"),
             "400": _err("no simulated nodes"), "404": _err("no such node")},
            parameters=[_path_param("nodeName")])},
        "/system/quart/stats": {"get": _op(
            "QuartStats", "ours: queue depth and in-flight per function",
            {"200": _json({"type": "object", "additionalProperties": _ref("FunctionStats")},
                          "per function")})},
    }


def function_paths() -> dict[str, Any]:
    """``/function/{name}``, ``/function/{name}.{namespace}`` and ``/function/{name}/{path}``,
    every method forwarded.

    The function's own answer (any status, any content) comes back as it is; these
    are the answers the gateway or provider gives itself.
    """
    answer: dict[str, Any] = {"content": {"*/*": {"schema": {}}}}
    own = {
        "200": {"description": "the function's answer (its headers and body)", **answer},
        "default": {"description": "the function's answer with another status", **answer},
        "400": _err("a namespace other than " + NAMESPACE),
        "404": _err("no such function"),
        "413": TOO_LARGE,
        "429": _err("the function's queue is full (QUART_QUEUE_SIZE)"),
        "502": _err("the replica failed or the provider is unreachable"),
        "504": _err("no replica became free, or it did not answer, in time"),
    }
    body = {"required": False, "description": "passed to the function as it is",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    paths = {}
    sub = {**_path_param("path"), "description": "passed on to the function as its path "
                                                 "(more segments work the same)"}
    for template, params, kind in (
            ("/function/{functionName}", [_path_param("functionName")], ""),
            ("/function/{functionName}.{namespace}",
             [_path_param("functionName"), _path_param("namespace")], "Namespaced"),
            ("/function/{functionName}/{path}", [_path_param("functionName"), sub], "Path")):
        item = {}
        for m in INVOKE_METHODS:
            op: dict[str, Any] = {
                "operationId": f"Invoke{m.title()}{kind}",
                "summary": f"invoke the function ({m.upper()}); extra path segments and the "
                           "query string are passed on", "tags": ["function"],
                "parameters": params, "responses": own}
            if m not in ("get", "head", "options"):
                op["requestBody"] = body
            item[m] = op
        paths[template] = item
    return paths


def _doc(title: str, paths: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1.0.0",
                 "description": "Quart-FaaS local provider; errors are {\"error\": ...}"},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basicAuth": {"type": "http", "scheme": "basic"}}},
    })


def _common(metrics: bool) -> dict[str, Any]:
    paths = {"/healthz": {"get": {"operationId": "healthcheck", "summary": "liveness",
                                  "tags": ["internal"], "responses": {"200": OK_TEXT}}},
             "/openapi.json": {"get": {"operationId": "openapi", "summary": "this document",
                                       "tags": ["internal"], "responses": {"200": SELF}}}}
    if metrics:
        paths["/metrics"] = {"get": {"operationId": "metrics", "tags": ["internal"],
                                     "summary": "gateway Prometheus metrics",
                                     "responses": {"200": METRICS}}}
    return paths


def gateway_document() -> dict[str, Any]:
    """The gateway surface (QUART_GATEWAY_PORT): /system/* is forwarded to the provider."""
    return _doc("Quart-FaaS gateway", {**_common(True), **system_paths(gateway=True),
                                       **function_paths()})


def provider_document() -> dict[str, Any]:
    """The faas-provider API (QUART_PROVIDER_PORT, upstream's functions_provider_url)."""
    return _doc("Quart-FaaS provider", {**_common(False), **system_paths(),
                                        **function_paths()})


def metrics_document() -> dict[str, Any]:
    """The gateway's metrics listener (QUART_METRICS_PORT, upstream's 8082)."""
    return _doc("Quart-FaaS gateway metrics", _common(True))
