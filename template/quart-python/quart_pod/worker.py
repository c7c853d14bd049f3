"""A pod worker: the lean server (lean_http.py) on the pod's shared listening socket, one
connection at a time.

Why gate accept(): every worker polls the same socket, and the kernel hands a new
connection to one that calls accept(). A worker that accepted while computing would
queue the request behind its own (the stage's compute lock) while another worker idles.
So a worker accepts only while it holds fewer than QUART_POD_WORKER_INFLIGHT (default 1)
connections: the socket's backlog becomes the pod's one FIFO queue in front of N servers
(the M/M/c queue the plugin's policy models), and a request waits only when every worker
is busy.

Why one request per connection (``Connection: close``): of-watchdog keeps idle upstream
connections for reuse; a kept connection pins its next request to the worker that
accepted it, busy or not, and holds that worker's accept slot while idle. A new loopback
connection per request costs ~0.1 ms.

A retired worker (SIGTERM from the zygote) stops accepting at once, tells the zygote,
finishes the connections it holds (at most QUART_POD_DRAIN_S) and exits.  The listening
socket is polled with a short timeout (every worker sets the same, on the one socket they
share), so a retired worker's loop ends within ``ACCEPT_POLL_S``.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import lean_http

from . import control
from .shared import READY, RETIRING

ACCEPT_POLL_S = 0.2


class Gate:
    """The connections this worker holds, and whether it still accepts."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active, self.retiring = max(1, limit), 0, False
        self.cond = threading.Condition()

    def wait_room(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.active < self.limit, timeout)

    def opened(self) -> None:
        with self.cond:
            self.active += 1

    def closed(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def wait_idle(self, deadline: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.active == 0, max(0.0, deadline - time.monotonic()))


class PodDispatch:
    """The function's router, plus the in-flight count of this worker and the control
    paths (``/_/quart/*``), which never reach the handler."""

    def __init__(self, router: Callable[[lean_http.Request], lean_http.Answer], zygote: Any,
                 slot: int) -> None:
        self.router, self.z, self.slot = router, zygote, slot
        self.lock = threading.Lock()
        self.tag = ("X-Quart-Worker", str(os.getpid()))

    def _count(self, delta: int) -> None:
        with self.lock:
            self.z.slots.add_inflight(self.slot, delta)

    def __call__(self, req: lean_http.Request) -> lean_http.Answer:
        if req.path == "/_/quart" or req.path.startswith("/_/quart/"):
            return control.handle(req, self.z)
        if req.path.startswith("/_/"):  # health, openapi: not work, not counted as busy
            status, headers, body = self.router(req)
            return status, [*headers, self.tag], body
        self._count(+1)
        try:
            status, headers, body = self.router(req)
        except BaseException:
            self._count(-1)
            raise
        if isinstance(body, (bytes, bytearray, str)):
            self._count(-1)
        else:  # streamed: busy until its last chunk is sent (or the caller went away)
            body = self._counted(body)
        return status, [*headers, self.tag], body

    def _counted(self, body: Any) -> Iterator[Any]:
        try:
            yield from body
        finally:
            close = getattr(body, "close", None)
            if callable(close):
                close()
            self._count(-1)


def serve(zygote: Any, slot: int, router: Callable[[lean_http.Request], lean_http.Answer],
          sock: socket.socket) -> None:
    """Serve on the pod's socket until retired and drained; runs in the forked worker."""
    cfg = zygote.cfg
    gate = Gate(cfg.worker_inflight)
    dispatch = PodDispatch(router, zygote, slot)

    def retire(*_: object) -> None:
        if not gate.retiring:
            gate.retiring = True
            zygote.events.send(RETIRING)

    def one(conn: socket.socket) -> None:
        try:
            lean_http.serve_connection(conn, dispatch, once=True)
        finally:
            gate.closed()

    signal.signal(signal.SIGTERM, retire)
    sock.settimeout(ACCEPT_POLL_S)
    zygote.events.send(READY)
    while not gate.retiring:
        if not gate.wait_room(ACCEPT_POLL_S) or gate.retiring:
            continue
        try:
            conn, _ = sock.accept()
        except (TimeoutError, BlockingIOError):
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        gate.opened()
        threading.Thread(target=one, args=(conn,), daemon=True, name="pod-conn").start()
    gate.wait_idle(time.monotonic() + cfg.drain_s)
