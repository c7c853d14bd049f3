"""The control port: ``/_/quart/*`` served by the zygote itself, on QUART_CONTROL_PORT
(default 8082) beside the watchdog's 8080 and its metrics' 8081.

Why a port of its own: through the watchdog a control call queues like a function call,
behind of-watchdog's ``max_inflight`` (429 once full) and then in the pod's socket backlog
behind every busy worker. A saturated pod would answer the plugin late, or refuse it,
exactly when the plugin must give it more workers or CPU. The zygote serves no calls: it
answers at once, whatever its workers are doing.

How: in the zygote's one ``selectors`` loop, with non-blocking sockets (no thread: a
thread in the zygote could hold a lock at fork(); see zygote.py). A small HTTP/1.1
subset: one request per connection (``Connection: close``), a ``Content-Length`` body of
at most 4 KiB, headers of at most 8 KiB, a connection silent for 10 s is dropped. The
checks and answers are the worker path's (control.decide, control.render): the same
token (404 without a token file, 401 for a wrong one), 400 for a bad body; a ``PUT``
is answered once applied, as on the other path.
"""
from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from . import control

MAX_HEAD = 8192
IDLE_S = 10.0
Answer = tuple[int, bytes, str, list[tuple[str, str]]]


def parse(buf: bytes) -> tuple[str, str, dict[str, str], bytes] | None:
    """(method, path, headers (lower-case names), body) of a whole request; None while
    more is to come; Refused for what cannot be a request to this port."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        if len(buf) > MAX_HEAD:
            raise control.Refused(431, f"request head over {MAX_HEAD} bytes")
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise control.Refused(400, f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise control.Refused(400, f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise control.Refused(411, "send the body with a Content-Length")
    try:
        n = int(headers.get("content-length") or 0)
    except ValueError:
        raise control.Refused(400, "bad Content-Length") from None
    if not 0 <= n <= control.MAX_BODY:
        raise control.Refused(413, f"body of {n} bytes, over {control.MAX_BODY}")
    if len(rest) < n:
        return None
    return parts[0], parts[1].split("?", 1)[0], headers, rest[:n]


def response(answer: Answer, head_only: bool = False) -> bytes:
    status, body, ctype, headers = answer
    reason = control.STATUS.get(status, f"{status} Error").split(" ", 1)[1]
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}",
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close",
             *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


class ControlPort:
    """The listening socket and the connections being read, on the zygote's selector.

    ``perform(request, conn, reply)`` is the zygote's: it answers a request now or, for a
    ``PUT``, once the change is applied, by calling ``reply(answer)``."""

    def __init__(self, sock: socket.socket, sel: selectors.BaseSelector, cfg: Any,
                 perform: Callable[[dict[str, Any], socket.socket,
                                    Callable[[dict[str, Any]], None]], None]) -> None:
        self.sock, self.sel, self.cfg, self.perform = sock, sel, cfg, perform
        self.reading: dict[socket.socket, tuple[bytearray, float]] = {}
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, self._accept)

    @classmethod
    def open(cls, host: str, port: int, *args: Any) -> ControlPort:
        try:
            sock = socket.create_server((host, port), backlog=128)
        except OSError as e:
            raise OSError(e.errno, f"QUART_CONTROL_PORT={port}: cannot listen on "
                                   f"{host}:{port}: {e.strerror}") from None
        return cls(sock, *args)

    def due(self) -> float | None:
        """When the oldest silent connection is to be dropped (monotonic), if any."""
        return min((t for _, t in self.reading.values()), default=None)

    def expire(self, now: float) -> None:
        for conn in [c for c, (_, t) in self.reading.items() if t <= now]:
            self._drop(conn)

    def close(self) -> None:
        """In a new worker: the zygote's sockets are none of its business."""
        for conn in self.reading:
            conn.close()
        self.reading.clear()
        self.sock.close()

    def _accept(self, _sock: object) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        conn.setblocking(False)
        self.reading[conn] = (bytearray(), time.monotonic() + IDLE_S)
        self.sel.register(conn, selectors.EVENT_READ, self._read)

    def _drop(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        del self.reading[conn]
        conn.close()

    def _read(self, conn: socket.socket) -> None:
        buf, _ = self.reading[conn]
        try:
            chunk = conn.recv(MAX_HEAD + control.MAX_BODY)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        buf += chunk
        try:
            req = parse(bytes(buf))
            if req is None:
                return
            method, path, headers, body = req
            op = control.decide(method, path, headers.get("authorization", ""),
                                lambda: body, self.cfg)
        except control.Refused as e:
            self._finish(conn, control.refusal(e))
            return
        self.sel.unregister(conn)
        del self.reading[conn]
        head_only = method == "HEAD"
        self.perform(op, conn, lambda ans: send(conn, response(control.render(op, ans),
                                                               head_only)))

    def _finish(self, conn: socket.socket, answer: Answer) -> None:
        self.sel.unregister(conn)
        del self.reading[conn]
        send(conn, response(answer))


def send(conn: socket.socket, data: bytes) -> None:
    """An answer fits the socket's send buffer: the 2 s bound is for a peer that vanished."""
    try:
        conn.setblocking(True)
        conn.settimeout(2.0)
        conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()
