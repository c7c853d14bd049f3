"""The replica's HTTP/1.1 server on the hot path: a thread per connection, keep-alive, no WSGI.

Why not waitress + Flask, which the template used before: every stage of a pipeline is
reached through two HTTP legs per request (caller -> gateway -> replica), and measured on
this machine a loopback POST of 200 KB of activations costs 0.55 ms a round trip through
waitress + Flask (an asyncore thread parses, hands the request to a task thread, Flask
builds a request context and matches a route) and 0.07 ms through this server (the
connection's own thread parses, calls, writes). A thread per connection is the right
shape here: the callers are a gateway and a provider that keep a few pooled connections
each, not thousands of clients.

What a caller sees is what the Flask app answered (tests/template_env.py checks every
result shape both ways): the same statuses and bodies, ``text/html; charset=utf-8`` when
the handler names no content type, automatic ``HEAD`` and ``OPTIONS``, a 405 with
``Allow`` for other methods, chunked bodies for a handler's generator, and a 500 (logged
with its traceback) when the handler raises.  Bad requests get a 400/413/431 and the
connection closes; the replica keeps serving.  ``Router`` holds that policy and the
python3-http contract (``handle(event, context)``, ``answer``), which index.py's Flask app
(pod mode, ``QUART_HTTP_SERVER=waitress``) shares.
"""
from __future__ import annotations

import email.utils
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.exceptions import InternalServerError

log = logging.getLogger("quart.http")

MAX_HEADER_BYTES = 64 << 10  # the request line and headers together
MAX_BODY_BYTES = 1 << 30  # waitress's default max_request_body_size
IDLE_S = 120.0  # an idle kept-alive connection is closed (waitress's channel_timeout)
# threads a replica may hold for connections (waitress allowed 100, plus its 8 threads)
MAX_CONNECTIONS = max(1, int(os.environ.get("QUART_MAX_CONNECTIONS", "256") or 256))
INLINE_BODY = 256 << 10  # bodies up to this go out in one send with the head
NO_BODY = frozenset({204, 304})
OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
HTML = "text/html; charset=utf-8"  # what Flask sends when the handler names no type
METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")  # the template's routes (HEAD: as GET)
ALLOW = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"  # what Flask's automatic OPTIONS lists
RESERVED = ("/_/health", "/_/openapi.json")  # the template's, never the handler's
INTERNAL_ERROR = InternalServerError().get_body().encode()  # Flask's 500 page


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One parsed request: what ``dispatch`` needs and no more."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
                 body: bytes, keep_alive: bool) -> None:
        self.method, self.path, self.query = method, path, query
        self.headers, self.body, self.keep_alive = headers, body, keep_alive


# (status, headers, body): body is bytes, or an iterable of str/bytes sent chunked
Answer = tuple[int, Iterable[tuple[str, str]], Any]
Dispatch = Callable[[Request], Answer]


class Event:
    """What a handler gets, as in upstream python3-http: body, headers, method, query, path."""

    def __init__(self, body: bytes, headers: Any, method: str, query: Any, path: str) -> None:
        self.body, self.headers, self.method, self.query, self.path = (
            body, headers, method, query, path)


class Context:
    def __init__(self) -> None:
        self.hostname = os.getenv("HOSTNAME", "localhost")  # read per call: a fork renames


def answer(res: Any, dumps: Callable[[Any], str]) -> tuple[int, Headers, Any]:
    """As upstream python3-http: a dict with statusCode (or only body/headers) is a response,
    its dict or list body sent as JSON; any other dict or list is the JSON answer itself."""
    if not isinstance(res, dict) or "statusCode" not in res and not (
            "body" in res and res.keys() <= {"body", "headers"}):
        res = {"body": res}  # None is an empty 200; str and bytes go out as they are
    body, headers = res.get("body"), Headers(res.get("headers") or {})
    if isinstance(body, (dict, list)):
        body = dumps(body) + "\n"  # what jsonify sends
        headers.setdefault("Content-Type", "application/json")
    elif body is None or not isinstance(body, (str, bytes)) and not hasattr(body, "__next__"):
        body = "" if body is None else str(body)  # a generator streams; a number is its str
    headers.setdefault("Content-Type", HTML)  # as Flask's Response
    return int(res.get("statusCode", 200)), headers, body


class Router:
    """The template's routes without Flask: ``/_/health`` and ``/_/openapi.json`` answered by
    ``reserved`` (never queued behind calls), the handler for everything else, at most
    ``inflight`` handler calls at once (max_inflight, as waitress's threads bounded them)."""

    def __init__(self, handle: Callable[[Event, Context], Any],
                 reserved: Callable[[str], Answer], inflight: int,
                 dumps: Callable[[Any], str]) -> None:
        self.handle, self.reserved, self.dumps = handle, reserved, dumps
        self.slots = threading.BoundedSemaphore(max(1, inflight))

    def __call__(self, req: Request) -> Answer:
        if req.path in RESERVED:
            if req.method not in ("GET", "HEAD"):
                return 405, [("Allow", "GET, HEAD"), ("Content-Type", HTML)], b""
            return self.reserved(req.path)
        if req.method == "OPTIONS":
            return 200, [("Allow", ALLOW), ("Content-Type", HTML)], b""
        if req.method not in METHODS and req.method != "HEAD":
            return 405, [("Allow", ALLOW), ("Content-Type", HTML)], b""
        event = Event(req.body, Headers(req.headers), req.method,
                      ImmutableMultiDict(parse_qsl(req.query, keep_blank_values=True)), req.path)
        with self.slots:
            try:
                res = self.handle(event, Context())
            except Exception:
                log.exception("Exception on %s [%s]", req.path, req.method)
                return 500, [("Content-Type", HTML)], INTERNAL_ERROR
        return answer(res, self.dumps)


def serve(lsock: socket.socket, dispatch: Dispatch) -> None:
    """Accept on ``lsock`` (already listening) forever, a thread per connection; past
    ``MAX_CONNECTIONS`` open ones, new connections wait in the listen backlog."""
    lsock.setblocking(True)
    room = threading.BoundedSemaphore(MAX_CONNECTIONS)
    while True:
        room.acquire()
        try:
            conn, _ = lsock.accept()
        except InterruptedError:
            room.release()
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_held, args=(conn, dispatch, room), daemon=True,
                         name="http-conn").start()


def _held(conn: socket.socket, dispatch: Dispatch, room: threading.BoundedSemaphore) -> None:
    try:
        serve_connection(conn, dispatch)
    finally:
        room.release()


def serve_connection(conn: socket.socket, dispatch: Dispatch, once: bool = False) -> None:
    """Requests on ``conn`` until the peer closes it (or after one, ``once``: pod mode)."""
    conn.settimeout(IDLE_S)
    rfile = conn.makefile("rb", buffering=1 << 16)
    try:
        while True:
            try:
                req = _read_request(rfile, conn)
            except BadRequest as e:
                _send(conn, "GET", e.status, [("Content-Type", "text/plain; charset=utf-8")],
                      f"{e}\n".encode(), keep_alive=False)
                return
            if req is None:
                return
            req.keep_alive = req.keep_alive and not once
            try:
                status, headers, body = dispatch(req)
            except Exception:  # dispatch answers the handler's errors; this is a last resort
                log.exception("%s %s failed", req.method, req.path)
                status, headers, body = 500, [], b"Internal Server Error\n"
                req.keep_alive = False
            _send(conn, req.method, status, headers, body, req.keep_alive)
            if not req.keep_alive:
                return
    except OSError:  # the peer went away, or sat idle past IDLE_S
        pass
    finally:
        rfile.close()
        conn.close()


def _read_request(rfile: Any, conn: socket.socket) -> Request | None:
    line = rfile.readline(MAX_HEADER_BYTES + 1)
    while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore empty lines before a request
        line = rfile.readline(MAX_HEADER_BYTES + 1)
    if not line:
        return None
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts[0].decode("latin-1"), parts[1].decode("latin-1"), parts[2]
    headers, size = [], len(line)
    while True:
        h = rfile.readline(MAX_HEADER_BYTES + 1)
        size += len(h)
        if size > MAX_HEADER_BYTES:
            raise BadRequest(431, "request headers too large")
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise BadRequest(400, "connection closed inside the headers")
        name, sep, value = h.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.append((name, value.strip()))
    lower = {k.lower(): v for k, v in headers}
    conn_tokens = {t.strip().lower() for t in lower.get("connection", "").split(",")}
    keep = "close" not in conn_tokens and (version == b"HTTP/1.1" or "keep-alive" in conn_tokens)
    if lower.get("expect", "").lower() == "100-continue" and version == b"HTTP/1.1":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = _read_body(rfile, lower)
    path, _, query = target.partition("?")
    return Request(method, unquote(path), query, headers, body, keep)


def _read_body(rfile: Any, lower: dict[str, str]) -> bytes:
    if "chunked" in lower.get("transfer-encoding", "").lower():
        return _read_chunked(rfile)
    raw = lower.get("content-length")
    if raw is None:
        return b""
    if not raw.isdigit():
        raise BadRequest(400, "malformed Content-Length")
    n = int(raw)
    if n > MAX_BODY_BYTES:
        raise BadRequest(413, f"body of {n} bytes over the limit of {MAX_BODY_BYTES}")
    body = rfile.read(n)
    if len(body) != n:
        raise BadRequest(400, "connection closed inside the body")
    return body


def _read_chunked(rfile: Any) -> bytes:
    out: list[bytes] = []
    total = 0
    while True:
        size_line = rfile.readline(1024).split(b";")[0].strip()
        try:
            n = int(size_line, 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size") from None
        if n == 0:
            while rfile.readline(MAX_HEADER_BYTES) not in (b"\r\n", b"\n", b""):
                pass  # trailers: read and dropped
            return b"".join(out)
        total += n
        if total > MAX_BODY_BYTES:
            raise BadRequest(413, f"chunked body over the limit of {MAX_BODY_BYTES} bytes")
        chunk = rfile.read(n)
        if len(chunk) != n or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BadRequest(400, "malformed chunked body")
        out.append(chunk)


_date = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, email.utils.formatdate(now, usegmt=True)
    return str(_date[1])


def _send(conn: socket.socket, method: str, status: int, headers: Iterable[tuple[str, str]],
          body: Any, keep_alive: bool) -> None:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Date: {_http_date()}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in OWN_HEADERS]
    if not keep_alive:
        lines.append("Connection: close")
    if isinstance(body, str):
        body = body.encode()
    streamed = not isinstance(body, (bytes, bytearray, memoryview))
    if status in NO_BODY or status < 200:
        _close_iter(body)
        body, streamed = b"", False
    elif streamed:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if method == "HEAD":
        _close_iter(body)
        conn.sendall(head)
    elif streamed:
        conn.sendall(head)
        _send_chunks(conn, body)
    elif len(body) <= INLINE_BODY:
        conn.sendall(head + body)
    else:
        conn.sendall(head)
        conn.sendall(body)


def _send_chunks(conn: socket.socket, body: Iterable[Any]) -> None:
    """A generator's pieces as they come; a peer that went away ends the generator."""
    try:
        for piece in body:
            data = piece.encode() if isinstance(piece, str) else bytes(piece)
            if data:
                conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        conn.sendall(b"0\r\n\r\n")
    finally:
        _close_iter(body)


def _close_iter(body: Any) -> None:
    close = getattr(body, "close", None)
    if callable(close):
        close()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
