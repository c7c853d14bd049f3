"""The faas-provider REST API (what the upstream gateway calls ``functions_provider_url``).

One handler per route as in faas-provider; status codes follow faas-netes:
202 for accepted deploy/update/delete/scale, 404 for an unknown function,
400 for a request we refuse (nothing changes), 409 when deploying a name that
exists.  Invocation lives here too, so the upstream gateway can use us as is.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

from contracts.jsonbody import BadJSON, parse_json
from local_provider import openapi
from local_provider.auth import BasicAuth
from local_provider.config import NAMESPACE, ProviderConfig
from local_provider.function_limits import FunctionLimits
from local_provider.info import ProviderInfo
from local_provider.logs import LogRequest
from local_provider.proxy import ReplicaProxy
from local_provider.records import FunctionExists, FunctionNotFound
from local_provider.registry import Registry
from local_provider.replicas import NodeFleet
from local_provider.secret_store import (
    Secret,
    SecretExists,
    SecretName,
    SecretNotFound,
)
from local_provider.types import (
    DeleteFunctionRequest,
    FunctionDeployment,
    ScaleServiceRequest,
    ValidationError,
    check_namespace,
    statuses_json,
)
from local_provider.web import (
    FUNCTION_METHODS,
    install_basic_auth,
    install_body_refusal,
    json_error,
    register_error_handlers,
    request_parts,
    result_response,
    split_function_name,
)


def _body() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ValidationError("body", "empty; a JSON object is required")
    try:  # nesting and lone surrogates are refused here too, never a 500 later
        return parse_json(raw)
    except BadJSON as e:
        raise ValidationError("body", str(e)) from None


def _query_namespace() -> None:
    check_namespace(request.args.get("namespace"), "namespace (query)")


def create_provider_app(registry: Registry, proxy: ReplicaProxy, config: ProviderConfig,
                        auth: BasicAuth | None, info: ProviderInfo | None = None,
                        limits: FunctionLimits | None = None) -> Flask:
    app = Flask("local_provider.provider")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    register_error_handlers(app)
    install_basic_auth(app, auth)
    install_body_refusal(app)
    provider_info = info or ProviderInfo.ours()

    @app.errorhandler(ValidationError)
    def _invalid(e: ValidationError) -> Response:
        return json_error(400, str(e))

    @app.errorhandler(FunctionNotFound)
    def _unknown(e: FunctionNotFound) -> Response:
        return json_error(404, f"function not found: {e.args[0]}")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(openapi.provider_document())

    _function_routes(app, registry, config)
    _system_routes(app, provider_info)
    _secret_routes(app, registry)
    _log_routes(app, registry, config)
    _quart_routes(app, registry, config, limits or FunctionLimits(registry))

    # strict_slashes=False: "/function/x" and "/function/x/" both invoke, never a redirect.
    @app.route("/function/<fn>", defaults={"path": ""}, methods=FUNCTION_METHODS,
               strict_slashes=False)
    @app.route("/function/<fn>/<path:path>", methods=FUNCTION_METHODS)
    def invoke(fn: str, path: str) -> Response:
        name, namespace = split_function_name(fn)
        if namespace != NAMESPACE:
            return json_error(400, f"namespace must be: {NAMESPACE} (got {namespace!r})")
        method, query, headers, body = request_parts()
        return result_response(proxy.invoke(name, path, method, query, headers, body))

    return app


def _function_routes(app: Flask, registry: Registry, config: ProviderConfig) -> None:
    """faas-provider's function CRUD and scaling: 202 accepted, 404 unknown, 409 exists."""

    @app.get("/system/functions")
    def list_functions() -> Response:
        _query_namespace()
        return Response(statuses_json(registry.statuses()), mimetype="application/json")

    @app.post("/system/functions")
    def deploy() -> Response:
        dep = FunctionDeployment.from_json(_body(), config.max_replicas)
        try:
            registry.deploy(dep)
        except FunctionExists:
            return json_error(409, f"function {dep.service} already exists; "
                                   "use PUT /system/functions to update it")
        return Response(status=202)

    @app.put("/system/functions")
    def update() -> Response:
        dep = FunctionDeployment.from_json(_body(), config.max_replicas)
        registry.update(dep)  # FunctionNotFound -> 404, faas-cli then POSTs
        return Response(status=202)

    @app.delete("/system/functions")
    def delete() -> Response:
        _query_namespace()
        req = DeleteFunctionRequest.from_json(_body())
        registry.delete(req.function_name)
        return Response(status=202)

    @app.get("/system/function/<name>")
    def get_function(name: str) -> Response:
        _query_namespace()
        return jsonify(registry.status(name).to_json())

    @app.post("/system/scale-function/<name>")
    def scale(name: str) -> Response:
        _query_namespace()
        req = ScaleServiceRequest.from_json(_body(), name, config.max_replicas)
        registry.scale(name, req.replicas)
        return Response(status=202)


def _system_routes(app: Flask, provider_info: ProviderInfo) -> None:
    @app.get("/system/info")
    def system_info() -> Response:
        return jsonify(provider_info.to_json())

    @app.get("/system/namespaces")
    def namespaces() -> Response:
        return jsonify([NAMESPACE])


def _quart_routes(app: Flask, registry: Registry, config: ProviderConfig,
                  limits: FunctionLimits) -> None:
    """Ours, under /system/quart/: capabilities, simulated nodes, load figures."""

    @app.get("/system/quart/capabilities")
    def capabilities() -> Response:
        """Ours: what this provider enforces, e.g. whether limits.cpu becomes a cgroup quota."""
        lim = registry.limiter
        return jsonify({"cpu_limits": lim.describe() if lim is not None else
                        {"available": False, "cgroup": None, "path": None,
                         "reason": "QUART_CPU_LIMITS=off"},
                        "max_replicas": config.max_replicas})

    @app.get("/system/quart/nodes")
    def nodes() -> Response:
        """Ours: the simulated nodes (QUART_NODES) with their cache and replicas."""
        describe = getattr(registry.launcher, "describe", None)
        return jsonify(describe() if describe else [])

    @app.post("/system/quart/nodes/<name>/fail")
    def fail_node(name: str) -> Response:
        """Ours: simulate a node failure (kill its keys_manager, zygotes and replicas)."""
        launcher = registry.launcher
        if not isinstance(launcher, NodeFleet):
            return json_error(400, "no simulated nodes: start the provider with QUART_NODES")
        if name not in launcher.nodes:
            return json_error(404, f"no node {name!r}; nodes: {sorted(launcher.nodes)}")
        out = launcher.fail(name)
        registry.kick()
        return jsonify(out)

    @app.get("/system/quart/stats")
    def stats() -> Response:
        """Ours: queue depth and in-flight per function, for a gateway in another process,
        with each function's body limit where it has one (``maxBodyBytes``)."""
        stats: dict[str, dict[str, Any]] = dict(registry.stats())
        for name, limit in limits.all().items():
            if name in stats:
                stats[name]["maxBodyBytes"] = limit
        return jsonify(stats)


def _ndjson(name: str, messages: list[Any]) -> Iterator[bytes]:
    for m in messages:
        yield json.dumps(m.to_json(name)).encode() + b"\n"


def _secret_routes(app: Flask, registry: Registry) -> None:
    """faas-provider's secrets API: GET lists names (never values), POST creates (409 when it
    exists), PUT replaces (404 when missing), DELETE removes; 202 like faas-netes."""
    store = registry.secrets

    @app.get("/system/secrets")
    def list_secrets() -> Response:
        _query_namespace()
        return jsonify([SecretName(name=n, namespace=NAMESPACE).to_json() for n in store.names()])

    @app.post("/system/secrets")
    def create_secret() -> Response:
        req = Secret.from_json(_body(), need_value=True)
        try:
            store.create(req)
        except SecretExists:
            return json_error(409, f"secret {req.name} already exists; PUT it to replace it")
        return Response(status=202)

    @app.put("/system/secrets")
    def update_secret() -> Response:
        req = Secret.from_json(_body(), need_value=True)
        try:
            store.update(req)
        except SecretNotFound:
            return json_error(404, f"secret not found: {req.name}")
        return Response(status=202)

    @app.delete("/system/secrets")
    def delete_secret() -> Response:
        req = Secret.from_json(_body(), need_value=False)
        try:
            store.delete(req.name)
        except SecretNotFound:
            return json_error(404, f"secret not found: {req.name}")
        return Response(status=202)


def _log_routes(app: Flask, registry: Registry, config: ProviderConfig) -> None:
    @app.get("/system/logs")
    def logs() -> Response:
        """faas-provider's log API: NDJSON, streamed while ``follow`` lasts."""
        req = LogRequest.from_query(request.args)
        if not registry.exists(req.name):
            return json_error(404, f"function not found: {req.name}")
        backlog, cursor = registry.logs.query(req)
        gone = request.environ.get("waitress.client_disconnected") or (lambda: False)
        deadline = time.monotonic() + config.log_follow_s

        def lines() -> Iterator[bytes]:
            yield b"".join(_ndjson(req.name, backlog))  # b"" still sends the headers
            if req.follow:
                for batch in registry.logs.follow(req, cursor, deadline, gone):
                    yield b"".join(_ndjson(req.name, batch))

        return Response(lines(), mimetype="application/x-ndjson")
