"""The live concurrency meter: per-second means of the router's counts, as the simulator's
meter gives KPA and Ray Serve, read from a real HTTP endpoint."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmark.live.driver import BaselineDriver
from benchmark.live.meter import LiveConcurrencyMeter
from benchmark.systems.base import Bounds
from benchmark.systems.registry import parse_systems
from gateway_plugin.actuate import Gateway


def test_each_second_closes_as_the_mean_of_its_samples() -> None:
    m = LiveConcurrencyMeter("http://127.0.0.1:1", None)
    m.add(10.05, {"f": 2.0, "g": 0.0})
    m.add(10.55, {"f": 4.0, "g": 1.0})
    assert m.drain() == {}  # second 10 is still open
    m.add(11.01, {"f": 7.0, "g": 0.0})
    assert m.drain() == {"f": ((11.0, 3.0),), "g": ((11.0, 0.5),)}
    assert m.drain() == {}  # handed over once
    m.add(13.2, {"f": 1.0})  # a second with no sample (12) is not reported
    assert m.drain() == {"f": ((12.0, 7.0),), "g": ((12.0, 0.0),)}
    with pytest.raises(ValueError):
        LiveConcurrencyMeter("http://x", None, sample_s=0.0)


class _Stats(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Stats.calls += 1
        body = json.dumps({"emu-stage-0": {"inflight": 3, "queueDepth": 2,
                                           "instances": []}}).encode()
        self.send_response(200 if self.path == "/system/quart/stats" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_meter_samples_the_gateway_ten_times_a_second() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    meter = LiveConcurrencyMeter(f"http://127.0.0.1:{srv.server_port}", ("admin", "x")).start()
    try:
        time.sleep(2.3)
        got = meter.drain()
    finally:
        meter.stop()
        srv.shutdown()
    seconds = got["emu-stage-0"]
    assert len(seconds) >= 1 and all(v == 5.0 for _, v in seconds)  # queued + in flight
    assert 15 <= _Stats.calls <= 30 and meter.errors == 0


def test_systems_that_read_concurrency_get_a_meter_and_others_do_not() -> None:
    gw = Gateway("http://127.0.0.1:1", None)
    for name, metered in (("knative-kpa", True), ("ray-serve", True), ("openfaas-ce", False),
                          ("static", False)):
        (system,) = parse_systems(name, Bounds(1, 5))
        d = BaselineDriver(system, gw, "http://127.0.0.1:1", 1.0, Bounds(1, 5))
        assert (d.meter is not None) is metered, name
