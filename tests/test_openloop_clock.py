"""openloop.run's offsets count from the caller's clock when it passes one (``start_at``).

Why: the soak scores a failed call against the time of the kill that failed it; both must be
read on one clock.  When openloop started its own 50 ms after a call timed to the soak's t0,
the two differed by the sleep's overshoot, and on a busy CI machine a call failed by a kill
looked finished before it ("a 502 outside the injected faults")."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from benchmark import openloop


class _Stamp(BaseHTTPRequestHandler):
    seen: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        _Stamp.seen.append(time.perf_counter())
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_offsets_count_from_start_at():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stamp)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter() + 0.4  # well past openloop's own 50 ms lead
        res = openloop.run(f"http://127.0.0.1:{srv.server_port}/", b"{}",
                           np.array([0.0, 0.1]), start_at=t0)
    finally:
        srv.shutdown()
    assert [r.status for r in res] == [200, 200]
    first = min(_Stamp.seen)
    assert first >= t0 - 0.005, f"sent {t0 - first:.3f}s before t0"
    for r in res:  # done = t0 + planned + latency, on the caller's clock
        assert r.latency_s < 0.3, r


class _Hold(BaseHTTPRequestHandler):
    seen: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        _Hold.seen.append(time.perf_counter())
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(1.5)  # a backlog: every request stays outstanding
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Backlog(ThreadingHTTPServer):
    request_queue_size = 256  # listen()'s backlog: a burst of connections at once


def test_a_burst_leaves_on_schedule_however_many_are_outstanding():
    # 150 requests within 0.15 s against a server that holds each for 1.5 s: all of them
    # must reach it before any answer comes back (a 64-thread pool held 86 of them back)
    srv = _Backlog(("127.0.0.1", 0), _Hold)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter() + 0.2
        res = openloop.run(f"http://127.0.0.1:{srv.server_port}/", b"{}",
                           np.linspace(0.0, 0.15, 150), start_at=t0, timeout_s=30)
    finally:
        srv.shutdown()
    assert [r.status for r in res] == [200] * 150
    assert len(_Hold.seen) == 150
    assert max(_Hold.seen) - t0 < 1.0, f"the last left {max(_Hold.seen) - t0:.2f} s after t0"
