"""A pod worker: waitress on the pod's shared listening socket, one connection at a time.

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
finishes the connections it holds (at most QUART_POD_DRAIN_S) and exits.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask
from werkzeug.wsgi import ClosingIterator

from . import control
from .shared import READY, RETIRING

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _CloseTask(WSGITask):
    def build_response_header(self) -> bytes:
        self.request.headers["CONNECTION"] = "close"  # one request per connection: see above
        return super().build_response_header()


class _CloseChannel(HTTPChannel):
    task_class = _CloseTask


class GatedServer(TcpWSGIServer):
    """Accepts only below ``limit`` open connections, and never once retiring."""

    channel_class = _CloseChannel
    limit = 1
    retiring = False

    def readable(self) -> bool:
        return super().readable() and self._room()

    def handle_accept(self) -> None:
        if self._room():  # woken with the others for one connection: take it only with room
            super().handle_accept()

    def _room(self) -> bool:
        return not self.retiring and len(self.active_channels) < self.limit


class _Wakeup(wasyncore.file_dispatcher):
    """Reads the bytes signal.set_wakeup_fd writes, so that select() returns on SIGTERM."""

    def handle_read(self) -> None:
        self.recv(512)

    def writable(self) -> bool:
        return False


class PodApp:
    """The function's WSGI app, plus the in-flight count of this worker and the control
    paths (``/_/quart/*``), which never reach the handler."""

    def __init__(self, app: WSGIApp, zygote: Any, slot: int) -> None:
        self.app, self.z, self.slot = app, zygote, slot
        self.lock = threading.Lock()
        self.tag = str(os.getpid())

    def _count(self, delta: int) -> None:
        with self.lock:
            self.z.slots.add_inflight(self.slot, delta)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_/quart" or path.startswith("/_/quart/"):
            return control.handle(environ, start_response, self.z)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("X-Quart-Worker", self.tag)], exc_info)

        if path.startswith("/_/"):  # health, openapi: not work, not counted as busy
            return self.app(environ, start)
        self._count(+1)
        try:
            body = self.app(environ, start)
        except BaseException:
            self._count(-1)
            raise
        return ClosingIterator(body, [lambda: self._count(-1)])


def serve(zygote: Any, slot: int, app: WSGIApp, sock: socket.socket,
          server_kw: dict[str, Any]) -> None:
    """Serve on the pod's socket until retired and drained; runs in the forked worker."""
    cfg = zygote.cfg
    adj = Adjustments(sockets=[sock], threads=cfg.threads, ident=None, **server_kw)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    smap: dict[int, Any] = {}
    server = GatedServer(PodApp(app, zygote, slot), smap, True, sock, dispatcher=dispatcher,
                         adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
    server.limit = cfg.worker_inflight

    def retire(*_: object) -> None:
        if not server.retiring:
            server.retiring = True
            zygote.events.send(RETIRING)

    wake_r, wake_w = os.pipe()  # the signal wakes the loop (set_wakeup_fd), which re-checks
    os.set_blocking(wake_w, False)
    _Wakeup(wake_r, smap)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, retire)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # a request can come before
    zygote.events.send(READY)  # the threads wait for work: said once per worker, not news
    deadline = 0.0
    while True:
        wasyncore.loop(timeout=1.0, map=smap, count=1)
        if server.retiring:
            deadline = deadline or time.monotonic() + cfg.drain_s
            if not server.active_channels or time.monotonic() >= deadline:
                break
    dispatcher.shutdown(cancel_pending=True, timeout=1)
