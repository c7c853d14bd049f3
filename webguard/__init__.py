"""The doors of the plugin's and the scorer's HTTP services (issue 18, findings 3 and 4).

Why here, shared: both services change or reveal scaling state, both sit beside the
OpenFaaS gateway, and both must answer a stranger the way the gateway does: the gateway's
own basic-auth credentials (``admin`` and the password of the ``basic-auth`` secret, found
the OpenFaaS way), 401 with ``WWW-Authenticate`` without them, and every refusal a JSON
``{"error": ...}``, never Werkzeug's HTML page.

Credentials, in the order the OpenFaaS components look for them:

  user      ``QUART_BASIC_AUTH_USER``, ``basic_auth_user``, else
            ``$secret_mount_path/basic-auth-user``, else ``admin``
  password  ``QUART_BASIC_AUTH_PASSWORD_FILE``, else ``$secret_mount_path/basic-auth-password``,
            else ``$QUART_STATE_DIR/basic-auth-password`` (what ``quart-faas up`` writes)

``basic_auth=false`` (upstream's knob) is the only way to serve without them: a service that
finds no password refuses to start rather than leave its doors open.

Bodies: ``parse_json`` (from ``contracts.jsonbody``, where the local provider reads its
bodies too) refuses what ``json.loads`` would push into a 500: text that is not UTF-8,
nesting deeper than a payload needs, strings holding a lone surrogate.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from contracts.basic_auth import REALM, BasicAuth
from contracts.jsonbody import MAX_DEPTH, BadJSON, nesting_depth, parse_json

log = logging.getLogger("webguard")

__all__ = ["MAX_DEPTH", "AuthConfigError", "BadJSON", "auth_enabled", "credentials", "install",
           "json_error", "nesting_depth", "parse_json", "require", "unauthorized"]


class AuthConfigError(ValueError):
    pass


# ------------------------------------------------------------------ credentials

def credentials(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(user, password) found the OpenFaaS way, or None when no password is configured."""
    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    mount = Path(get("secret_mount_path")) if get("secret_mount_path") else None
    user = get("QUART_BASIC_AUTH_USER") or get("basic_auth_user")
    if not user and mount is not None and (mount / "basic-auth-user").is_file():
        user = (mount / "basic-auth-user").read_text().strip()
    candidates = [get("QUART_BASIC_AUTH_PASSWORD_FILE")]
    if mount is not None:
        candidates.append(str(mount / "basic-auth-password"))
    candidates.append(str(Path(get("QUART_STATE_DIR") or ".quart") / "basic-auth-password"))
    for c in filter(None, candidates):
        p = Path(c)
        if p.is_file():
            password = p.read_text().strip()
            if password:
                return user or "admin", password
    return None


def auth_enabled(env: Mapping[str, str]) -> bool:
    """Upstream's ``basic_auth`` (default true); anything but a clear false keeps it on."""
    return (env.get("basic_auth") or "true").strip().lower() not in ("0", "false", "no", "off")


def require(enabled: bool, user: str, password: str, service: str) -> BasicAuth | None:
    """The check a service's doors use; refuses to go on open by accident."""
    if not enabled:
        log.warning("%s: basic_auth=false, every endpoint is open to anyone who reaches it",
                    service)
        return None
    if not password:
        raise AuthConfigError(
            f"{service}: no basic-auth password (set secret_mount_path with basic-auth-user and "
            "basic-auth-password, QUART_BASIC_AUTH_PASSWORD_FILE, or QUART_STATE_DIR holding "
            "basic-auth-password; basic_auth=false serves without one)")
    return BasicAuth(user, password)


# ------------------------------------------------------------------ bodies
# parse_json, nesting_depth, BadJSON and MAX_DEPTH live in contracts.jsonbody (shared with the
# local provider) and are re-exported here for the plugin and the scorer.

# ------------------------------------------------------------------ Flask

def json_error(status: int, message: str, **extra: Any) -> Response:
    return Response(json.dumps({"error": message, **extra}) + "\n", status=status,
                    mimetype="application/json")


def unauthorized(error: Callable[..., Response] = json_error) -> Response:
    resp = error(401, "unauthorized: this endpoint takes the OpenFaaS gateway's "
                           "basic-auth credentials")
    resp.headers["WWW-Authenticate"] = REALM
    return resp


def install(app: Flask, auth: BasicAuth | None, public: Iterable[str],
            error: Callable[..., Response] = json_error) -> None:
    """Lock every endpoint but ``public`` (endpoint names) behind ``auth``, and answer every
    HTTP error and every unexpected exception with JSON.  A route-specific handler an app
    registers for one code (its 404 listing its endpoints) still wins: Flask looks a
    handler up by code before the class."""
    open_endpoints = frozenset(public)

    @app.before_request
    def door() -> Response | None:
        # endpoint None: no route matched; the 404 or 405 reveals nothing and is answered
        if auth is None or request.endpoint is None or request.endpoint in open_endpoints:
            return None
        if auth.check(request.headers.get("Authorization")):
            return None
        return unauthorized(error)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        resp = error(e.code or 500, e.description or e.name)
        if isinstance(e, MethodNotAllowed) and e.valid_methods:  # a 405 names what is allowed
            resp.headers["Allow"] = ", ".join(e.valid_methods)  # (RFC 9110)
        return resp

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> Response:
        log.exception("request failed: %s %s", request.method, request.path)
        return error(500, f"internal error: {type(e).__name__}")
