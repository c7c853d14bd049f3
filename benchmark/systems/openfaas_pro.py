"""OpenFaaS Pro autoscaler: proportional scaling on rps, in-flight capacity or CPU.

Documented behaviour (docs.openfaas.com/architecture/autoscaling, "How
auto-scaling works"; openfaas.com/blog/autoscaling-functions, 2022-11-05):

    desired = ready pods * (mean load per pod / (target * target-proportion))

rounded up (the docs' worked examples: 15 in-flight, target 5, proportion 1
-> 3; 90 in-flight, target 100, proportion 0.7 -> 2), then kept within
``com.openfaas.scale.min``/``max``.  Since mean load per pod is the total
load over the ready pods, this is ``ceil(load / (target * proportion))`` for
any ready count above zero; it is evaluated that way here, rounded to 1e-9
first so that float noise (3 * 30/9 = 10.000000000000002) does not add a pod.

The load of each mode is the recording rule the chart ships
(faas-netes ``chart/openfaas/templates/prometheus-cfg.yaml``, Pro branch):

- ``rps``: ``sum(rate(gateway_function_invocation_total[30s]))`` (all codes);
- ``capacity``: ``sum(max_over_time(gateway_function_invocation_inflight[45s:5s]))``;
- ``cpu``: ``irate(pod_cpu_usage_seconds_total[1m]) * 1000`` (milli-CPU).  No
  CPU counter reaches the benchmark, so this model uses the stage's arrival
  rate times its CPU-seconds per request; that mode is selectable by name
  but not part of the ``baselines`` shorthand.

Label defaults (same docs page): ``com.openfaas.scale.type`` rps,
``target`` 50, ``target-proportion`` 0.90, ``min`` 1, ``max`` 20, ``zero``
false, ``zero-duration`` 15m.  ``com.openfaas.scale.down.window`` (off by
default, at most 5m) makes scale-down go only to the highest recommendation
recorded in the window; scale-up and scale-to-zero are unaffected.

The docs ask for the target to be set per function (it is "the average
load per replica of your function"); 50 rps or 50 in-flight would mean a
model stage never scales.  Unless ``target`` is given, a stage's target is
set once, the first time it can be, to what one replica sustains: its
throughput ``1 / service_time_s`` in rps mode, ``replica_concurrency``
(default 1, a stage serves one request at a time) in capacity mode, its
CPU limit in milli-CPU in cpu mode.  The docs do not say how often the
autoscaler runs ("a query is run periodically"); 5 s is used, the gateway's
scrape interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_plugin.policies.observation import StageObservation

from .base import Bounds, Target, Tick
from .common import (
    Samples,
    check_positive,
    clamp,
    concurrency_of,
    counter_of,
    extrapolated_rate,
    per_stage,
    push,
    stages,
    window_max,
)

__all__ = ["MODES", "OpenFaaSPro", "ProState", "desired_replicas"]

MODES = ("rps", "capacity", "cpu")
DOCS_DEFAULT_TARGET = 50.0
MAX_DOWN_WINDOW_S = 300.0


def desired_replicas(load: float, ready: int, target: float, proportion: float) -> int:
    """``ceil(ready * ((load / ready) / (target * proportion)))`` for ready > 0."""
    if ready <= 0:
        raise ValueError("the formula needs at least one ready pod")
    per_pod = load / ready
    return math.ceil(round(ready * (per_pod / (target * proportion)), 9))


@dataclass(frozen=True)
class ProState:
    counters: Mapping[str, Samples] = field(default_factory=dict)
    inflight: Mapping[str, Samples] = field(default_factory=dict)
    recommendations: Mapping[str, Samples] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)
    targets: Mapping[str, float] = field(default_factory=dict)
    last_active_s: Mapping[str, float] = field(default_factory=dict)


class OpenFaaSPro:
    scaleup = "cold"

    def __init__(
        self,
        bounds: Bounds,
        *,
        mode: str = "rps",
        name: str | None = None,
        target: float | Mapping[str, float] | None = None,
        target_proportion: float = 0.9,
        down_window_s: float = 0.0,
        scale_zero: bool = False,
        zero_duration_s: float = 900.0,
        period_s: float = 5.0,
        replica_concurrency: float = 1.0,
        rps_range_s: float = 30.0,
        capacity_range_s: float = 45.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        check_positive("target", target)
        check_positive("target_proportion", target_proportion)
        check_positive("down_window_s", down_window_s, allow_zero=True)
        if down_window_s > MAX_DOWN_WINDOW_S:
            raise ValueError(f"down_window_s is at most {MAX_DOWN_WINDOW_S:g} s (the docs' 5m)")
        for label, value in (
            ("zero_duration_s", zero_duration_s),
            ("period_s", period_s),
            ("replica_concurrency", replica_concurrency),
            ("rps_range_s", rps_range_s),
            ("capacity_range_s", capacity_range_s),
        ):
            check_positive(label, value)
        self.name = name or f"openfaas-pro-{mode}"
        self.mode = mode
        self.bounds = bounds
        self.period_s = float(period_s)
        self.target = target
        self.proportion = float(target_proportion)
        self.down_window_s = float(down_window_s)
        self.scale_zero = scale_zero
        self.zero_duration_s = float(zero_duration_s)
        self.replica_concurrency = float(replica_concurrency)
        self.rps_range_s = float(rps_range_s)
        self.capacity_range_s = float(capacity_range_s)
        # com.openfaas.scale.min is the floor "whilst under load": at least 1
        self.min_label = max(1, bounds.min_replicas)

    def initial_state(self) -> ProState:
        return ProState()

    def _derived_target(self, s: StageObservation) -> float | None:
        if self.mode == "rps":
            return None if s.service_time_s is None else 1.0 / s.service_time_s
        if self.mode == "capacity":
            return self.replica_concurrency
        return 1000.0 * (s.cpu_cores if s.cpu_cores else 1.0)

    def decide(self, tick: Tick, state: ProState) -> tuple[dict[str, Target], ProState]:
        """Per function: its load (``_load``) against its target (``_target``) gives the
        count (``_scale``, with the down window), then scale to zero after idling."""
        now = tick.now_s
        counters, inflight = dict(state.counters), dict(state.inflight)
        recs, replicas = dict(state.recommendations), dict(state.replicas)
        targets_s, active = dict(state.targets), dict(state.last_active_s)
        out: dict[str, Target] = {}
        for _, s in stages(tick):
            name = s.name
            load, busy = self._load(tick, s, state, counters, inflight)
            if busy or name not in active:
                active[name] = now
            target = self._target(s, targets_s)
            n, why = self._scale(s, load, target, replicas.get(name, s.replicas), now, recs)
            idle = now - active[name]
            if self.scale_zero and idle >= self.zero_duration_s:
                n = 0
                why += f"; idle {idle:.0f}s >= zero-duration: scale to zero"
            n = self.bounds.clamp(n)
            replicas[name] = n
            out[name] = Target(n, None, why)
        new = ProState(counters=counters, inflight=inflight, recommendations=recs,
                       replicas=replicas, targets=targets_s, last_active_s=active)
        return out, new

    def _load(self, tick: Tick, s: StageObservation, state: ProState,
              counters: dict[str, Samples], inflight: dict[str, Samples]
              ) -> tuple[float | None, bool]:
        """The mode's load metric (None: no data yet) and whether the function saw traffic;
        records this scrape's sample in ``counters`` / ``inflight``."""
        name, now = s.name, tick.now_s
        load: float | None = None
        busy = bool(s.arrival_rate)
        if self.mode == "rps":
            count = counter_of(tick, name, None)
            if count is not None:
                prev = state.counters.get(name, ())
                busy = busy or (bool(prev) and count > prev[-1][1])
                counters[name] = push(prev, now, count, self.rps_range_s + 2 * self.period_s)
                load = extrapolated_rate(counters[name], now, self.rps_range_s)
            if load is None:
                load = s.arrival_rate  # no counter series: the observed rate
        elif self.mode == "capacity":
            conc = concurrency_of(tick, s)
            if conc is not None:
                busy = busy or conc > 0
                keep = self.capacity_range_s + self.period_s
                inflight[name] = push(state.inflight.get(name, ()), now, conc, keep)
                load = window_max(inflight[name], now, self.capacity_range_s)
        elif s.arrival_rate is not None and s.cpu_s_per_request is not None:
            load = 1000.0 * s.arrival_rate * s.cpu_s_per_request
        return load, busy

    def _target(self, s: StageObservation, targets_s: dict[str, float]) -> float | None:
        """The configured per-replica target, else one derived once and remembered."""
        target = per_stage(self.target, s.name, None)
        if target is None:
            target = targets_s.get(s.name)
            if target is None:
                target = self._derived_target(s)
                if target is not None:
                    targets_s[s.name] = target
        return target

    def _scale(self, s: StageObservation, load: float | None, target: float | None,
               current: int, now: float, recs: dict[str, Samples]) -> tuple[int, str]:
        """The autoscaler's count for ``load`` over ``target`` per replica, and why."""
        if load is None or target is None:
            n = clamp(self.bounds, current, self.min_label)
            return n, f"{self.mode}: no load or target yet, hold {n}"
        if s.replicas > 0:
            want = desired_replicas(load, s.replicas, target, self.proportion)
        else:  # 0/0: the gateway scales from zero to min on the first request
            want = self.min_label if load > 0 else 0
        want = min(max(want, self.min_label), self.bounds.max_replicas)
        n, why = self._apply_window(s.name, want, current, now, recs)
        return n, (
            f"{self.mode}: load {load:.3g} / ({target:.3g} x {self.proportion:g}) "
            f"on {s.replicas} ready -> {want}" + why
        )

    def _apply_window(
        self, name: str, want: int, current: int, now: float, recs: dict[str, Samples]
    ) -> tuple[int, str]:
        if self.down_window_s <= 0:
            return want, ""
        window = push(recs.get(name, ()), now, want, self.down_window_s)
        recs[name] = window
        if want >= current:
            return want, ""
        highest = int(max(v for _, v in window))
        n = min(current, highest)
        if n != want:
            return n, f"; down window {self.down_window_s:g}s keeps {n} (want {want})"
        return n, ""


def build(bounds: Bounds, **options: Any) -> OpenFaaSPro:
    return OpenFaaSPro(bounds, **options)
