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


def test_a_baseline_first_decides_when_the_simulator_does() -> None:
    from benchmark.live.run import first_decision_s

    for name, want in (("openfaas-ce", 1.0 + 0.5), ("knative-kpa", 2.0 + 1.0),
                       ("ray-serve", 1.0 + 0.5), ("openfaas-pro-capacity", 5.0 + 0.5)):
        opts = {name: {"scrape_interval_s": 1.0}} if name == "openfaas-ce" else None
        (system,) = parse_systems(name, Bounds(1, 5), opts)
        assert first_decision_s(system) == pytest.approx(want), name


def test_a_driver_stopped_before_it_started_stops_cleanly() -> None:
    (system,) = parse_systems("knative-kpa", Bounds(1, 5))
    d = BaselineDriver(system, Gateway("http://127.0.0.1:1", None), "http://127.0.0.1:1", 1.0,
                       Bounds(1, 5))
    d.stop()  # a deployment that failed before the load: nothing was started
    d2 = BaselineDriver(system, Gateway("http://127.0.0.1:1", None), "http://127.0.0.1:1", 1.0,
                        Bounds(1, 5)).start(first_s=30.0)
    t0 = time.monotonic()
    d2.stop()  # waiting for its first decision: stops at once, having made none
    assert time.monotonic() - t0 < 5 and d2.cycles == 0
