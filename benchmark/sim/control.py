"""One control period: Prometheus' answers -> Tick -> the system's decision -> the provider.

The observation is built by the plugin's own code, ``metrics_in.combine``
then ``observe.build`` per pipeline, with the same ``ServiceMemory`` carried
across periods, so Quart reads in the simulator exactly what it reads live
(own latency by subtracting the next stage's, service time from compute
time, arrival CV from inter-arrival moments).  ``replicas`` in the
observation is the desired count, as the gateway's ``replicas`` field the
plugin reads (``actuate.Gateway.functions``).

Applying a :class:`~benchmark.systems.base.Target`: replicas go through the
provider's reconcile (clamped to 0..``max_replicas``, the provider's cap);
``cpu`` sets ``limits.cpu`` on every replica of the stage (a CFS quota
live), which caps its compute speed at ``min(threads, cpu)`` cores.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from benchmark.results import TimelineRow
from benchmark.systems.base import Target, Tick
from gateway_plugin import observe
from gateway_plugin.actuate import Function, Pipeline
from gateway_plugin.metrics_in import combine

from .concurrency import ConcurrencyMeter
from .model import Model
from .prom import Prometheus
from .runtime import Stage
from .spec import PipelineSpec

__all__ = ["Controller"]


class Controller:
    def __init__(self, model: Model, prom: Prometheus, specs: Sequence[PipelineSpec],
                 stages: Sequence[Stage]) -> None:
        self.model = model
        self.prom = prom
        self.specs = list(specs)
        self.stages = list(stages)
        self.by_name = {s.name: s for s in self.stages}
        self.memory: dict[str, observe.ServiceMemory] = {}
        self.timeline: list[TimelineRow] = []
        self.decide_s = 0.0
        self.ticks = 0
        self.meter: ConcurrencyMeter | None = None  # set when the system reads concurrency

    def tick(self, now: float) -> Tick:
        fm = combine(self.prom.raw(now))
        observations = []
        for spec, stages in zip(self.specs, self.model.pipes, strict=True):
            fns = tuple(Function(s.name, s.desired, s.ready_n, s.cpu, 1, None, {})
                        for s in stages)
            observations.append(observe.build(Pipeline(spec.name, fns, spec.slo_s), fm, now,
                                              spec.slo_s, self.memory))
        return Tick(now_s=now, pipelines=tuple(observations), in_flight=self.prom.in_flight(),
                    invocations=self.prom.invocations(),
                    concurrency=self.meter.drain() if self.meter is not None else {})

    def apply(self, targets: Mapping[str, Target]) -> None:
        if not isinstance(targets, Mapping):
            raise TypeError(f"decide() must return a mapping stage -> Target, got "
                            f"{type(targets).__name__}")
        cap = self.model.cfg.max_replicas
        rerate = {}
        for name, t in targets.items():
            st = self.by_name.get(name)
            if st is None:
                raise ValueError(f"the system returned a target for unknown stage {name!r}")
            if not isinstance(t, Target):
                raise TypeError(f"{name}: expected a Target, got {type(t).__name__}")
            n = max(0, min(cap, int(t.replicas)))
            if t.cpu is not None and t.cpu != st.cpu:
                if not (math.isfinite(t.cpu) and t.cpu > 0):
                    raise ValueError(f"{name}: cpu must be a finite number > 0, got {t.cpu!r}")
                st.cpu = float(t.cpu)
                st.cap = min(float(st.spec.threads), st.cpu)
                for r in st.replicas:
                    r.cap = st.cap
                    if r.busy is not None:
                        rerate[r.node.name] = r.node
            if n != st.desired:
                st.desired = n
                self.model.reconcile(st)
        for node in rerate.values():
            node.rerate()

    def retry_blocked(self) -> None:
        """Replicas that found no node are tried again every period (the provider's loop)."""
        for st in self.stages:
            if st.blocked and sum(1 for r in st.replicas if not r.draining) < st.desired:
                st.blocked = 0
                self.model.reconcile(st)

    def record(self, now: float) -> None:
        util = self.model.cluster.memory_util()
        self.timeline.extend(
            TimelineRow(now, s.name, s.ready_n, s.desired, float(len(s.queue)),
                        float(s.inflight()), s.cpu, util)
            for s in self.stages)

    def step(self, system: Any, state: Any, now: float, clock: Any) -> Any:
        t = self.tick(now)
        t0 = clock()
        targets, state = system.decide(t, state)
        self.decide_s += clock() - t0
        self.apply(targets)
        self.retry_blocked()
        self.ticks += 1
        return state
