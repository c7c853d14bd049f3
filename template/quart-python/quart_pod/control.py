"""``/_/quart/*`` in a worker: check the caller, then relay to the zygote, which decides.

  GET /_/quart/workers              -> {"workers": N, "ready": R, "busy": B, "pid": zygote}
  PUT /_/quart/workers {"workers": N} -> the same, once the change is applied
  GET /_/quart/metrics              -> Prometheus text (no token: Prometheus scrapes it)

``/_/quart/workers`` takes ``Authorization: Bearer TOKEN``, TOKEN being the content of
QUART_CONTROL_TOKEN_FILE (an OpenFaaS secret), read on every request so that a rotated
secret counts at once. Without that file (or with an empty one) the endpoint does not
exist (404) and the pod serves as usual. Why relay: every worker accepts on the pod's one
socket, so a control request lands on any worker, and only the zygote owns the workers.
"""
from __future__ import annotations

import hmac
import json
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MAX_BODY = 4096
JSON = "application/json"
STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized",
          404: "404 Not Found", 405: "405 Method Not Allowed", 411: "411 Length Required",
          413: "413 Payload Too Large", 503: "503 Service Unavailable"}


class Refused(Exception):
    def __init__(self, status: int, error: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or []


def handle(environ: dict[str, Any], start_response: Callable[..., Any], z: Any
           ) -> Iterable[bytes]:
    path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
    try:
        if path == "/_/quart/metrics":
            _methods(method, ("GET", "HEAD"))
            text = relay(z, {"op": "metrics"})["text"].encode()
            return _answer(start_response, 200, text, "text/plain; version=0.0.4; charset=utf-8")
        if path != "/_/quart/workers":
            raise Refused(404, f"no such control path {path!r}: /_/quart/workers, "
                               "/_/quart/metrics")
        _authorize(environ, z.cfg.token_file)
        _methods(method, ("GET", "PUT"))
        if method == "GET":
            return _json(start_response, 200, relay(z, {"op": "get"})["state"])
        n = parse_workers(_body(environ), z.cfg.max_workers)
        return _json(start_response, 200,
                     relay(z, {"op": "set", "workers": n, "from": os.getpid()})["state"])
    except Refused as e:
        return _json(start_response, e.status, {"error": e.error}, e.headers)


def _methods(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise Refused(405, f"method {method} not allowed", [("Allow", ", ".join(allowed))])


def read_token(path: Path) -> bytes | None:
    try:
        token = path.read_bytes().strip()
    except OSError:
        return None
    return token or None


def _authorize(environ: dict[str, Any], token_file: Path) -> None:
    token = read_token(token_file)
    if token is None:
        raise Refused(404, f"the control endpoint is off: no token in {token_file} "
                           "(QUART_CONTROL_TOKEN_FILE)")
    scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        raise Refused(401, "a valid 'Authorization: Bearer TOKEN' is required",
                      [("WWW-Authenticate", 'Bearer realm="quart-pod"')])


def _body(environ: dict[str, Any]) -> bytes:
    raw = environ.get("CONTENT_LENGTH") or ""
    if not raw.strip():
        if environ.get("HTTP_TRANSFER_ENCODING"):  # waitress de-chunks: read what came
            data = environ["wsgi.input"].read(MAX_BODY + 1)
            if len(data) > MAX_BODY:
                raise Refused(413, f"body over {MAX_BODY} bytes")
            return data
        raise Refused(400, 'PUT needs a JSON body {"workers": N}')
    try:
        n = int(raw)
    except ValueError:
        raise Refused(400, f"bad Content-Length {raw[:20]!r}") from None
    if n > MAX_BODY:
        raise Refused(413, f"body of {n} bytes, over {MAX_BODY}")
    return environ["wsgi.input"].read(n)


def parse_workers(body: bytes, max_workers: int) -> int:
    """``{"workers": N}`` with 1 <= N <= max_workers, nothing else; Refused(400) otherwise."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(400, f'malformed JSON ({e}); expected {{"workers": N}}') from None
    if not isinstance(doc, dict) or set(doc) != {"workers"}:
        raise Refused(400, 'expected exactly {"workers": N}')
    n = doc["workers"]
    if type(n) is not int:
        raise Refused(400, f"'workers' must be an integer, got {json.dumps(n)[:40]}")
    if not 1 <= n <= max_workers:
        raise Refused(400, f"'workers' must be within 1..{max_workers} "
                           f"(QUART_POD_MAX_WORKERS), got {n}")
    return n


def relay(z: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """One request to the zygote over its control socket; Refused when it says no."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(z.cfg.spawn_timeout_s + 10)
            s.connect(z.address)
            s.sendall(json.dumps(doc).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        ans = json.loads(buf or b"{}")
    except (OSError, ValueError) as e:
        raise Refused(503, f"the pod's zygote did not answer: {e}") from None
    if not ans.get("ok"):
        raise Refused(int(ans.get("status", 503)), str(ans.get("error", "no answer")))
    return ans


def _json(start_response: Callable[..., Any], status: int, doc: dict[str, Any],
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    return _answer(start_response, status, json.dumps(doc).encode() + b"\n", JSON, headers)


def _answer(start_response: Callable[..., Any], status: int, body: bytes, ctype: str,
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(STATUS[status], [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                    ("Cache-Control", "no-store"), *(headers or [])])
    return [body]
