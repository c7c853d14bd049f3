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
    now = 0
    most = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        with _Hold.lock:
            _Hold.seen.append(time.perf_counter())
            _Hold.now += 1
            _Hold.most = max(_Hold.most, _Hold.now)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.6)  # a backlog: every request stays outstanding a while
        with _Hold.lock:
            _Hold.now -= 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Backlog(ThreadingHTTPServer):
    request_queue_size = 256  # listen()'s backlog: a burst of connections at once


def test_a_burst_beyond_the_clients_slots_waits_in_the_client_and_counts_it():
    # 100 requests at once, 64 slots (the simulator's SimConfig.client_slots for the rig):
    # 64 reach the server, the other 36 as answers free slots, their wait in the latency
    srv = _Backlog(("127.0.0.1", 0), _Hold)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter() + 0.2
        res = openloop.run(f"http://127.0.0.1:{srv.server_port}/", b"{}", np.zeros(100),
                           start_at=t0, timeout_s=30)
    finally:
        srv.shutdown()
    assert openloop.WORKERS == 64
    assert [r.status for r in res] == [200] * 100 and len(_Hold.seen) == 100
    assert _Hold.most == 64
    late = sorted(r.latency_s for r in res)[64:]
    assert min(late) >= 1.1, late[:3]  # two holds of 0.6 s: one waited for, one served
