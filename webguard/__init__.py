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

Bodies: ``parse_json`` checks what ``json.loads`` would push into a 500 or hand on to code
that breaks later: text that is not UTF-8, nesting deeper than a payload ever needs
(``'{"a":' * 50000`` raised RecursionError, an HTML 500), and strings holding a lone
surrogate (``"\\ud800"`` decodes to a str that cannot be encoded again).  The depth is
counted after parsing, without recursion: a pre-scan of the text for brackets outside
strings is quadratic on ``"\\"\\"\\"...``, while the parser itself stops cleanly at the
interpreter's recursion limit.
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

log = logging.getLogger("webguard")

MAX_DEPTH = 32  # an AlertManager payload is 4 deep, a scorer request 4


class AuthConfigError(ValueError):
    pass


class BadJSON(ValueError):
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

def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON document, or BadJSON saying what is wrong with it (the caller answers 400)."""
    try:
        text = data.decode("utf-8")  # strict: refuses encoded surrogates and stray bytes
    except UnicodeDecodeError as e:
        raise BadJSON(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        doc = json.loads(text)
    except RecursionError:  # the C scanner stops at the interpreter's recursion limit
        raise BadJSON(f"JSON nested deeper than {max_depth}") from None
    except ValueError as e:
        raise BadJSON(f"malformed JSON: {e}") from None
    depth = nesting_depth(doc, max_depth)
    if depth > max_depth:
        raise BadJSON(f"JSON nested {depth} deep, more than {max_depth}")
    try:  # one pass in C over every string and key
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadJSON(f"a string holds a lone surrogate ({e.object[e.start:e.end]!r}): "
                      "not valid Unicode") from None
    return doc


def nesting_depth(doc: Any, stop_after: int = MAX_DEPTH) -> int:
    """Deepest nesting of lists and objects, walked level by level without recursion;
    stops once past ``stop_after`` (the answer is then ``stop_after + 1``)."""
    depth, level = 0, [doc] if isinstance(doc, (dict, list)) else []
    while level and depth <= stop_after:
        depth += 1
        below: list[Any] = []
        for node in level:
            below += [c for c in (node.values() if isinstance(node, dict) else node)
                      if isinstance(c, (dict, list))]
        level = below
    return depth


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
