"""``/_/quart/*``: check the caller, then let the zygote, which owns the workers, decide.

  GET /_/quart/workers              -> {"workers": N, "ready": R, "busy": B, "pid": zygote}
  PUT /_/quart/workers {"workers": N} -> the same, once the change is applied
  GET /_/quart/metrics              -> Prometheus text (no token: Prometheus scrapes it)

``/_/quart/workers`` takes ``Authorization: Bearer TOKEN``, TOKEN being the content of
QUART_CONTROL_TOKEN_FILE (an OpenFaaS secret), read on every request so that a rotated
secret counts at once. Without that file (or with an empty one) the endpoint does not
exist (404) and the pod serves as usual.

Two ways in, one set of checks (``decide``) and one rendering (``render``):
- the control port (QUART_CONTROL_PORT, default 8082; port.py): the zygote serves it in
  its own loop, so it answers at once however busy the workers are. The plugin and
  Prometheus use it.
- the function's port, through the watchdog (``handle`` below, in a worker): every worker
  accepts on the pod's one socket, so the request lands on any worker, which relays it to
  the zygote. It queues like a call (the watchdog's max_inflight, then the busy workers),
  so a saturated pod answers it late or with 429: kept for a caller without the port.
"""
from __future__ import annotations

import hmac
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_BODY = 4096
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized",
          404: "404 Not Found", 405: "405 Method Not Allowed", 411: "411 Length Required",
          413: "413 Payload Too Large", 431: "431 Request Header Fields Too Large",
          503: "503 Service Unavailable"}


class Refused(Exception):
    def __init__(self, status: int, error: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or []


def decide(method: str, path: str, authorization: str, body: Callable[[], bytes],
           cfg: Any) -> dict[str, Any]:
    """The zygote request a control call asks for ({"op": "get"|"set"|"metrics"}), or
    Refused; ``body`` is read only for an authorized PUT."""
    if path == "/_/quart/metrics":
        _methods(method, ("GET", "HEAD"))
        return {"op": "metrics"}
    if path != "/_/quart/workers":
        raise Refused(404, f"no such control path {path!r}: /_/quart/workers, "
                           "/_/quart/metrics")
    _authorize(authorization, cfg.token_file)
    _methods(method, ("GET", "PUT"))
    if method == "GET":
        return {"op": "get"}
    return {"op": "set", "workers": parse_workers(body(), cfg.max_workers)}


def render(op: dict[str, Any], ans: dict[str, Any]
           ) -> tuple[int, bytes, str, list[tuple[str, str]]]:
    """(status, body, content type, headers) of the zygote's answer ``ans`` to ``op``."""
    if not ans.get("ok"):
        return refusal(Refused(int(ans.get("status", 503)), str(ans.get("error", "no answer"))))
    if op["op"] == "metrics":
        return 200, ans["text"].encode(), PROMETHEUS, []
    return 200, json.dumps(ans["state"]).encode() + b"\n", JSON, []


def refusal(e: Refused) -> tuple[int, bytes, str, list[tuple[str, str]]]:
    return e.status, json.dumps({"error": e.error}).encode() + b"\n", JSON, e.headers


def handle(req: Any, z: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The watchdog's way in, in a worker (a lean_http request): relayed to the zygote over
    its unix socket."""
    headers = {k.lower(): v for k, v in req.headers}
    try:
        op = decide(req.method, req.path, headers.get("authorization", ""),
                    lambda: _body(req.body, headers), z.cfg)
        if op["op"] == "set":
            op["from"] = os.getpid()
        status, body, ctype, extra = render(op, relay(z, op))
    except Refused as e:
        status, body, ctype, extra = refusal(e)
    return status, [("Content-Type", ctype), ("Cache-Control", "no-store"), *extra], body


def _methods(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise Refused(405, f"method {method} not allowed", [("Allow", ", ".join(allowed))])


def read_token(path: Path) -> bytes | None:
    try:
        token = path.read_bytes().strip()
    except OSError:
        return None
    return token or None


def _authorize(authorization: str, token_file: Path) -> None:
    token = read_token(token_file)
    if token is None:
        raise Refused(404, f"the control endpoint is off: no token in {token_file} "
                           "(QUART_CONTROL_TOKEN_FILE)")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        raise Refused(401, "a valid 'Authorization: Bearer TOKEN' is required",
                      [("WWW-Authenticate", 'Bearer realm="quart-pod"')])


def _body(body: bytes, headers: dict[str, str]) -> bytes:
    """The PUT's body, already read by the server (chunked ones de-chunked)."""
    if "content-length" not in headers and "transfer-encoding" not in headers:
        raise Refused(400, 'PUT needs a JSON body {"workers": N}')
    if len(body) > MAX_BODY:
        raise Refused(413, f"body of {len(body)} bytes, over {MAX_BODY}")
    return body


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
    """One request to the zygote over its control socket: its answer (Refused: none)."""
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
    return ans if isinstance(ans, dict) else {}
