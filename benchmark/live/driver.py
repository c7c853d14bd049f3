"""A baseline autoscaler acting on the real gateway, the way its own controller would.

OpenFaaS CE, OpenFaaS Pro, Knative's KPA and Ray Serve are not installable on
this machine, so each is run as its documented policy (``benchmark/systems``)
inside this loop: every ``period_s`` it reads the gateway's metrics from the
real Prometheus, builds the same :class:`~benchmark.systems.base.Tick` the
simulator builds, and scales through the gateway's REST API
(``POST /system/scale-function/{name}``), exactly like Quart's plugin.  The
observation is built by the plugin's own ``observe.build`` so every system
reads the same numbers.  Quart itself runs as the real plugin process, not
through this loop.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmark.systems.base import Autoscaler, Bounds, Tick
from gateway_plugin import observe
from gateway_plugin.actuate import Gateway, GatewayError
from gateway_plugin.metrics_in import MetricsUnavailable, PrometheusReader

from .meter import LiveConcurrencyMeter

log = logging.getLogger("benchmark.live")

INVOCATIONS = "sum by (function_name, code) (gateway_function_invocation_total)"


class BaselineDriver:
    """Runs ``system`` against the gateway in a thread until :meth:`stop`."""

    def __init__(self, system: Autoscaler, gateway: Gateway, prometheus: str, slo_s: float,
                 bounds: Bounds, on_decision: Callable[[float, dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.system, self.gw, self.slo_s, self.bounds = system, gateway, slo_s, bounds
        self.reader = PrometheusReader(prometheus)
        self.state = system.initial_state()
        self.memory: dict[str, observe.ServiceMemory] = {}
        self.on_decision = on_decision
        self.clock = clock
        self.errors: list[str] = []
        self.cycles = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # KPA and Ray Serve read per-second concurrency averages on their platforms, as
        # the simulator gives them (benchmark/live/meter.py)
        self.meter = LiveConcurrencyMeter(gateway.url, gateway.auth, clock=clock) \
            if getattr(system, "reads_concurrency", False) else None

    def start(self, first_s: float = 0.0) -> BaselineDriver:
        """Act every ``period_s``, the first time ``first_s`` from now."""
        if self.meter is not None:
            self.meter.start()
        self._thread = threading.Thread(target=self._loop, args=(first_s,),
                                        name=f"driver-{self.system.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        if self.meter is not None:
            self.meter.stop()

    def _loop(self, first_s: float = 0.0) -> None:
        if first_s > 0 and self._stop.wait(first_s):
            return
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.cycle()
            except (GatewayError, MetricsUnavailable) as e:
                # like the plugin: hold on missing data, act again next period
                self.errors.append(f"{type(e).__name__}: {e}")
                log.warning("%s: holding this period: %s", self.system.name, e)
            self._stop.wait(max(0.0, self.system.period_s - (time.monotonic() - t0)))

    def tick(self) -> tuple[Tick, dict[str, Any]]:
        """What the system sees now, and the gateway's functions by name."""
        functions = self.gw.functions()
        pipelines = self.gw.pipelines(functions)
        fm = self.reader.read(max(2 * self.system.period_s, 4.0))
        now = self.clock()
        obs = tuple(observe.build(p, fm, now, self.slo_s, self.memory) for p in pipelines)
        in_flight = {name: (m.inflight or 0.0) + (m.queue_depth or 0.0) for name, m in fm.items()}
        invocations: dict[str, dict[str, float]] = {}
        for row in self.reader.query(INVOCATIONS):
            labels = row.get("metric", {})
            name = str(labels.get("function_name", "")).split(".")[0]
            invocations.setdefault(name, {})[str(labels.get("code", ""))] = \
                float(row["value"][1])
        concurrency = self.meter.drain() if self.meter is not None else {}
        return (Tick(now_s=now, pipelines=obs, in_flight=in_flight, invocations=invocations,
                     concurrency=concurrency), {f.name: f for f in functions})

    def cycle(self) -> dict[str, int]:
        tick, functions = self.tick()
        targets, self.state = self.system.decide(tick, self.state)
        self.cycles += 1
        applied: dict[str, int] = {}
        for name, target in targets.items():
            fn = functions.get(name)
            if fn is None:
                continue
            want = self.bounds.clamp(target.replicas)
            if want != fn.replicas:
                self.gw.scale(name, want)
            applied[name] = want
        if self.on_decision:
            self.on_decision(tick.now_s, applied)
        return applied
