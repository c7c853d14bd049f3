"""The gateway surface: ``/function/*`` with upstream metrics, ``/system/*`` behind basic auth.

Like the upstream gateway, it records ``started`` when a call begins and the
total/histogram with the final status when it ends, whoever produced that
status (the replica, the queue's 429/504, a 413 on the body).  Calls to a
function that does not exist get a 404 and are *not* recorded, so metric
labels stay bounded by the deployed functions.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import requests
import urllib3
from flask import Flask, Response, jsonify
from werkzeug.exceptions import RequestEntityTooLarge

from contracts.server_timing import first_seconds as server_timing_first
from local_provider import info, openapi
from local_provider.auth import BasicAuth
from local_provider.body_guard import RETRY_AFTER_S
from local_provider.config import NAMESPACE
from local_provider.delivery import root_error
from local_provider.function_limits import FunctionLimits
from local_provider.metrics import CONTENT_TYPE, FunctionGauges, GatewayMetrics, function_label
from local_provider.proxy import (
    InvokeResult,
    fast_call,
    invoke_pool,
    pooled_session,
    target_url,
)
from local_provider.registry import Registry
from local_provider.web import (
    FUNCTION_METHODS,
    body_refusal,
    install_basic_auth,
    install_body_refusal,
    json_error,
    register_error_handlers,
    request_parts,
    result_response,
    split_function_name,
)

log = logging.getLogger("local_provider.gateway")


class Invoker(Protocol):
    def invoke(self, name: str, path: str, method: str, query: str,
               headers: Iterable[tuple[str, str]], body: bytes) -> InvokeResult: ...


class Directory(Protocol):
    """What the gateway knows about deployed functions, without owning them."""

    def exists(self, name: str) -> bool: ...

    def gauges(self) -> dict[str, FunctionGauges]: ...

    def invalidate(self) -> None:
        """A /system/* change went through the gateway: forget cached knowledge."""

    def body_limit(self, name: str) -> int | None:
        """The largest body ``name`` accepts, if known; asked on waitress' I/O thread, so
        answered from memory (body_guard.py)."""


def _gauges(stats: dict[str, dict[str, int]]) -> dict[str, FunctionGauges]:
    return {function_label(name): FunctionGauges(s.get("availableReplicas", 0),
                                                 s.get("replicas", 0), s.get("inflight", 0),
                                                 s.get("queueDepth", 0), s.get("ejections", 0))
            for name, s in stats.items()}


class LocalDirectory:
    """Gateway and provider in one process: read the registry directly."""

    def __init__(self, registry: Registry, limits: FunctionLimits | None = None) -> None:
        self.registry = registry
        self.limits = limits or FunctionLimits(registry)

    def exists(self, name: str) -> bool:
        return self.registry.exists(name)

    def gauges(self) -> dict[str, FunctionGauges]:
        return _gauges(self.registry.stats())

    def invalidate(self) -> None:
        pass

    def body_limit(self, name: str) -> int | None:
        return self.limits.get(name)


class RemoteDirectory:
    """Gateway alone: poll the provider's stats (cached briefly, refreshed on a miss)."""

    def __init__(self, provider_url: str, auth: BasicAuth | None, max_age_s: float = 1.0) -> None:
        self.url = provider_url.rstrip("/") + "/system/quart/stats"
        self.auth = auth
        self.max_age_s = max_age_s
        self.session = pooled_session(8)
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, int]] | None = None
        self._at = 0.0

    def _fetch(self, max_age_s: float) -> dict[str, dict[str, int]] | None:
        with self._lock:
            if self._stats is not None and time.monotonic() - self._at < max_age_s:
                return self._stats
            headers = {"Authorization": self.auth.header()} if self.auth else {}
            try:
                r = self.session.get(self.url, headers=headers, timeout=2)
                r.raise_for_status()
                self._stats, self._at = r.json(), time.monotonic()
            except (requests.RequestException, ValueError) as e:
                log.warning("provider stats unavailable (%s): %s", self.url, e)
                self._stats, self._at = None, time.monotonic()
            return self._stats

    def exists(self, name: str) -> bool:
        stats = self._fetch(self.max_age_s)
        if stats is not None and name not in stats:
            stats = self._fetch(0.2)  # just deployed? look again (rate-limited)
        return stats is None or name in stats  # provider down: let the call report 502

    def gauges(self) -> dict[str, FunctionGauges]:
        return _gauges(self._fetch(self.max_age_s) or {})

    def invalidate(self) -> None:
        with self._lock:
            self._stats = None

    def body_limit(self, name: str) -> int | None:
        """From the provider's last stats (``maxBodyBytes``), never fetched here."""
        limit = ((self._stats or {}).get(name) or {}).get("maxBodyBytes")
        return limit if isinstance(limit, int) and limit > 0 else None


def create_gateway_app(invoker: Invoker, directory: Directory, metrics: GatewayMetrics,
                       provider_url: str, auth: BasicAuth | None, max_body_bytes: int,
                       system_timeout_s: float = 60.0, log_follow_s: float = 60.0) -> Flask:
    app = Flask("local_provider.gateway")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    register_error_handlers(app)
    install_basic_auth(app, auth)
    install_body_refusal(app, skip=("function",))  # the function route counts its own
    # /system/* goes on over urllib3 (as /function/* does), not requests: a scale call
    # through the gateway is on the path to a pooled replica's 5 ms (issue 17)
    system = invoke_pool(16)
    provider = provider_url.rstrip("/")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.get("/metrics")
    def metrics_here() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(openapi.gateway_document())

    _info_and_log_routes(app, provider, system, system_timeout_s, log_follow_s)

    _system_forward_route(app, directory, provider, system, system_timeout_s)
    _function_route(app, invoker, directory, metrics, max_body_bytes)
    return app


def _system_forward_route(app: Flask, directory: Directory, provider: str,
                          system: urllib3.PoolManager, system_timeout_s: float) -> None:
    """Every other /system/* call goes to the provider as it is; a change (not a GET) makes
    the directory of functions fetch afresh."""

    @app.route("/system/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def system_forward(path: str) -> Response:
        method, query, headers, body = request_parts()
        try:
            result = fast_call(system, method, target_url(provider, f"system/{path}", query),
                               headers, body, system_timeout_s)
        except urllib3.exceptions.HTTPError as e:
            return _unreachable(provider, e)
        if method != "GET" and result.status < 300:
            directory.invalidate()
        return result_response(result)


def _function_route(app: Flask, invoker: Invoker, directory: Directory, metrics: GatewayMetrics,
                    max_body_bytes: int) -> None:
    """/function/{name}: the call through the invoker, counted and timed in the gateway's
    metrics as upstream's gateway does."""

    # strict_slashes=False: "/function/x" and "/function/x/" both invoke, never a redirect.
    @app.route("/function/<fn>", defaults={"path": ""}, methods=FUNCTION_METHODS,
               strict_slashes=False)
    @app.route("/function/<fn>/<path:path>", methods=FUNCTION_METHODS)
    def function(fn: str, path: str) -> Response:
        name, namespace = split_function_name(fn)
        if namespace != NAMESPACE:
            return json_error(400, f"namespace must be: {NAMESPACE} (got {namespace!r})")
        if not directory.exists(name):
            return json_error(404, f"function not found: {name}")
        label = function_label(name, namespace)
        metrics.started(label)
        t0 = time.perf_counter()
        result: InvokeResult | None = None
        try:
            refused = body_refusal()
            if refused is not None:
                result = _refused_result(refused)
            else:
                try:
                    method, query, headers, body = request_parts()
                except RequestEntityTooLarge:
                    result = InvokeResult.error(413, f"request body larger than {max_body_bytes}"
                                                     " bytes (QUART_MAX_BODY_BYTES)")
                else:
                    if not any(k.lower() == "x-call-id" for k, _ in headers):
                        headers.append(("X-Call-Id", str(uuid.uuid4())))
                    result = invoker.invoke(name, path, method, query, headers, body)
        except Exception:
            log.exception("invoking %s failed", name)
            result = InvokeResult.error(500, f"gateway error invoking {name}")
        finally:
            seconds = time.perf_counter() - t0
            status = result.status if result is not None else 500
            if result is not None and result.stream is not None:
                # streamed (chunked): the call ends with its body, as behind upstream's proxy
                result.stream.on_close(lambda: metrics.finished(
                    label, status, time.perf_counter() - t0, ""))
            else:
                metrics.finished(label, status, seconds, result.rejected if result else "")
        assert result is not None
        if status < 400:
            own = server_timing_first(result.header("Server-Timing"))
            if own is not None:
                metrics.computed(label, own)
        result.set_header("X-Duration-Seconds", f"{seconds:.6f}")
        if status == 429 and result.header("Retry-After") is None:  # a full queue sheds too
            result.set_header("Retry-After", str(RETRY_AFTER_S))
        return result_response(result)


def _refused_result(refused: dict[str, Any]) -> InvokeResult:
    """The body guard's refusal as the call's answer (counted in the metrics like others)."""
    status = int(refused.get("status") or 413)
    extra = {k: v for k, v in refused.items() if k not in ("status", "error")}
    result = InvokeResult(status, [("Content-Type", "application/json")],
                          json.dumps({"error": refused.get("error"), **extra}).encode() + b"\n",
                          "body_budget" if status == 429 else "")
    if "retry_after" in refused:
        result.set_header("Retry-After", str(refused["retry_after"]))
    return result


def _unreachable(provider: str, e: BaseException) -> Response:
    return json_error(502, f"provider {provider} unreachable: {type(root_error(e)).__name__}")


def _info_and_log_routes(app: Flask, provider: str, system: urllib3.PoolManager,
                         system_timeout_s: float, log_follow_s: float) -> None:
    """The two /system/* routes the gateway answers itself instead of forwarding as they are."""
    streams = invoke_pool(16)

    @app.get("/system/info")
    def system_info() -> Response:
        """GatewayInfo around the provider's InfoResponse, as the upstream gateway answers."""
        method, query, headers, body = request_parts()
        try:
            result = fast_call(system, method, target_url(provider, "system/info", query),
                               headers, body, system_timeout_s)
        except urllib3.exceptions.HTTPError as e:
            return _unreachable(provider, e)
        if result.status != 200:
            return result_response(result)
        doc = info.ProviderInfo.read(result.body)
        if doc is None:
            return json_error(502, "the provider's /system/info is not a faas-provider "
                                   "InfoResponse")
        return jsonify(info.gateway_info(doc).to_json())

    @app.get("/system/logs")
    def system_logs() -> Response:
        """Streamed through (NDJSON while ``follow`` lasts), like upstream's log proxy."""
        method, query, headers, body = request_parts()
        try:
            result = fast_call(streams, method, target_url(provider, "system/logs", query),
                               headers, body, log_follow_s + 10)
        except urllib3.exceptions.HTTPError as e:
            return _unreachable(provider, e)
        return result_response(result)


def create_metrics_app(metrics: GatewayMetrics) -> Flask:
    """The upstream gateway serves Prometheus on its own port (8082)."""
    app = Flask("local_provider.metrics")
    register_error_handlers(app)

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(openapi.metrics_document())

    return app

