"""Flask glue shared by the provider and gateway apps.

Errors are answers: every failure is a JSON ``{"error": ...}``.  Flask's
defaults are HTML pages (and a stack trace in debug); clients of a provider
API parse JSON, so the 4xx/5xx handlers are replaced once, here.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from local_provider.auth import REALM, BasicAuth
from local_provider.body_guard import refused_body
from local_provider.config import NAMESPACE
from local_provider.proxy import REJECTED_HEADER, InvokeResult

log = logging.getLogger("local_provider.http")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    resp = Response(json.dumps({"error": message}) + "\n", status=status,
                    mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> Response:
        msg = {404: f"not found: {_path()}", 405: f"method not allowed on {_path()}",
               413: "request body too large"}.get(e.code or 500, e.description or e.name)
        resp = json_error(e.code or 500, msg)
        if isinstance(e, MethodNotAllowed) and e.valid_methods:
            resp.headers["Allow"] = ", ".join(e.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _crash(e: Exception) -> Response:
        log.exception("unhandled error on %s", _path())
        return json_error(500, f"internal error: {type(e).__name__}")


def _path() -> str:
    return request.path


def result_response(result: InvokeResult) -> Response:
    """An InvokeResult as a Flask response, headers as the replica sent them; a streamed
    body is written on as it arrives (waitress flushes each chunk) and closed after."""
    body = result.stream if result.stream is not None else result.body
    resp = Response(body, status=result.status)
    del resp.headers["Content-Type"]  # no Flask default: the replica's (or none) is kept
    for k, v in result.headers:
        resp.headers.add(k, v)
    if result.rejected:
        resp.headers[REJECTED_HEADER] = result.rejected
    return resp


def split_function_name(raw: str) -> tuple[str, str]:
    """``name`` or ``name.namespace`` (newer gateways label both ways)."""
    name, _, namespace = raw.partition(".")
    return name, namespace or NAMESPACE


def request_parts() -> tuple[str, str, list[tuple[str, str]], bytes]:
    """Method, raw query string, headers and body of the current request.

    Reading the body enforces ``MAX_CONTENT_LENGTH`` (413).
    """
    body = request.get_data(cache=False)
    query = request.query_string.decode("latin-1")
    headers = list(request.headers.items())
    remote = request.remote_addr or ""
    fwd = request.headers.get("X-Forwarded-For")
    hop = ("x-forwarded-for", "x-forwarded-host")
    headers = [(k, v) for k, v in headers if k.lower() not in hop]
    headers.append(("X-Forwarded-For", f"{fwd}, {remote}" if fwd else remote))
    headers.append(("X-Forwarded-Host", request.host))
    return request.method, query, headers, body


def install_basic_auth(app: Flask, auth: BasicAuth | None, prefix: str = "/system/") -> None:
    """Protect every path under ``prefix``; ``/function/*`` and ``/healthz`` stay open."""
    if auth is None:
        return

    @app.before_request
    def _guard() -> Response | None:
        if request.path.startswith(prefix) and not auth.check(request.headers.get("Authorization")):
            return json_error(401, "unauthorized: basic auth credentials required for /system/",
                              {"WWW-Authenticate": REALM})
        return None


def body_refusal() -> dict[str, Any] | None:
    """The refusal the body guard left on this request (413 or 429), or None."""
    return refused_body(request.environ)


def install_body_refusal(app: Flask, skip: tuple[str, ...] = ()) -> None:
    """Answer a request whose body the guard refused before any route reads it (the
    endpoints in ``skip`` answer it themselves)."""

    @app.before_request
    def _refused() -> Response | None:
        refused = body_refusal() if request.endpoint not in skip else None
        if refused is None:
            return None
        status = int(refused.get("status") or 413)
        doc = {"error": refused.get("error"),
               **{k: v for k, v in refused.items() if k not in ("status", "error")}}
        resp = Response(json.dumps(doc) + "\n", status=status, mimetype="application/json")
        if "retry_after" in refused:
            resp.headers["Retry-After"] = str(refused["retry_after"])
        return resp


FUNCTION_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
