"""Knative Pod Autoscaler (KPA): concurrency over a stable and a panic window.

Defaults are Knative Serving's ``config-autoscaler`` ConfigMap, as listed at
knative.dev/docs/serving/autoscaling (kpa-specific, concurrency, scale-to-zero):
``container-concurrency-target-default`` 100,
``container-concurrency-target-percentage`` (target utilisation) 70,
``stable-window`` 60s, ``panic-window-percentage`` 10 (6 s),
``panic-threshold-percentage`` 200, ``max-scale-up-rate`` 1000,
``max-scale-down-rate`` 2, ``scale-to-zero-grace-period`` 30s,
``enable-scale-to-zero`` true, ``tick-interval`` 2s.

The decision is ``Scale()`` in knative/serving
``pkg/autoscaler/scaling/autoscaler.go``::

    ready   = max(1, ready pods)
    dspc    = ceil(stable concurrency / target)     # 60 s average
    dppc    = ceil(panic concurrency / target)      # 6 s average
    both kept within [floor(ready / max-scale-down-rate), ceil(max-scale-up-rate * ready)]
    panic starts when dppc / ready >= panic threshold (2.0), is extended
    while that holds, and ends a stable window after it last held;
    in panic: desired = max(stable, panic), and never below the highest
    count asked for during this panic (no scale-down in panic).

``target`` is the per-pod concurrency the revision aims for:
``min(containerConcurrency, autoscaling.knative.dev/target or 100) *
utilisation``.  A model stage serves one request at a time, so
``container_concurrency`` defaults to 1 (target 0.7); pass ``target`` (the
annotation, per stage or for all) to change it.  Concurrency is what the
queue-proxies report: requests queued or in service, averaged over each second
(``Tick.concurrency``, from the simulator's meter); the stable and panic values
are means of those per-second values over 60 s and 6 s, as the autoscaler's
metric collector computes them.  A harness without per-second values (live)
gives one ``Tick.in_flight`` snapshot per tick instead.

Scale to zero needs the stable window to have seen no traffic at all
(desired 0) and then the grace period to pass; it only happens when the
harness's bounds allow 0 replicas.  No concurrency data yet is Knative's
``ScaleValid: false``: the current scale is held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .base import Bounds, Target, Tick
from .common import Samples, check_positive, observed_concurrency, per_stage, stages, window_mean

__all__ = ["KPAStage", "KPAState", "KnativeKPA", "kpa_scale"]

MIN_TARGET = 0.01  # autoscaling.TargetMin: a target is never taken as zero


class KPAStage(NamedTuple):  # a tuple: built for every function every tick
    samples: Samples = ()
    panic_since_s: float | None = None  # last time the panic condition held
    max_panic_pods: int = 0
    zero_since_s: float | None = None


@dataclass(frozen=True)
class KPAState:
    stages: Mapping[str, KPAStage] = field(default_factory=dict)


def kpa_scale(
    stable: float,
    panic: float,
    ready_pods: int,
    target: float,
    now_s: float,
    prev: KPAStage,
    *,
    stable_window_s: float = 60.0,
    panic_threshold: float = 2.0,
    max_scale_up_rate: float = 1000.0,
    max_scale_down_rate: float = 2.0,
) -> tuple[int, KPAStage, str]:
    """One ``Scale()`` call: (desired pods, new panic state, why)."""
    ready = max(1.0, float(ready_pods))
    max_up = math.ceil(max_scale_up_rate * ready)
    max_down = math.floor(ready / max_scale_down_rate)
    dspc = math.ceil(stable / target)
    dppc = math.ceil(panic / target)
    stable_pods = int(min(max(dspc, max_down), max_up))
    panic_pods = int(min(max(dppc, max_down), max_up))
    over = dppc / ready >= panic_threshold
    since, max_panic = prev.panic_since_s, prev.max_panic_pods
    if over:
        since = now_s  # start, or extend, the panic
    elif since is not None and since + stable_window_s < now_s:
        since, max_panic = None, 0  # the surge has made its way into the stable metric
    desired = stable_pods
    why = f"stable {stable:.3g}/{target:.3g} -> {stable_pods}"
    if since is not None:
        desired = max(desired, panic_pods)
        if desired > max_panic:
            max_panic = desired
        elif desired < max_panic:
            why += f"; no scale-down in panic ({desired} < {max_panic})"
        desired = max_panic
        why += f"; PANIC (panic {panic:.3g} -> {panic_pods})"
    state = KPAStage(prev.samples, since, max_panic, prev.zero_since_s)
    return desired, state, why


class KnativeKPA:
    scaleup = "cold"
    reads_concurrency = True  # the queue-proxies' per-second averages, when the harness has them

    def __init__(
        self,
        bounds: Bounds,
        *,
        name: str = "knative-kpa",
        container_concurrency: float | Mapping[str, float] = 1.0,
        target: float | Mapping[str, float] | None = None,
        target_utilization: float = 0.70,
        container_concurrency_target_default: float = 100.0,
        stable_window_s: float = 60.0,
        panic_window_percentage: float = 10.0,
        panic_threshold_percentage: float = 200.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        scale_to_zero_grace_s: float = 30.0,
        enable_scale_to_zero: bool = True,
        tick_interval_s: float = 2.0,
    ) -> None:
        check_positive("container_concurrency", container_concurrency, allow_zero=True)
        check_positive("target", target)
        for label, value in (
            ("target_utilization", target_utilization),
            ("container_concurrency_target_default", container_concurrency_target_default),
            ("stable_window_s", stable_window_s),
            ("panic_window_percentage", panic_window_percentage),
            ("panic_threshold_percentage", panic_threshold_percentage),
            ("max_scale_up_rate", max_scale_up_rate),
            ("max_scale_down_rate", max_scale_down_rate),
            ("tick_interval_s", tick_interval_s),
        ):
            check_positive(label, value)
        check_positive("scale_to_zero_grace_s", scale_to_zero_grace_s, allow_zero=True)
        if target_utilization > 1:
            raise ValueError("target_utilization is a fraction in (0, 1], e.g. 0.7 for 70 %")
        if not 1 <= panic_window_percentage <= 100:
            raise ValueError("panic_window_percentage must be in [1, 100]")
        if max_scale_down_rate <= 1 or max_scale_up_rate <= 1:
            raise ValueError("max scale-up/down rates must be > 1 (Knative validates this)")
        self.name = name
        self.bounds = bounds
        self.period_s = float(tick_interval_s)
        self.cc = container_concurrency
        self.target = target
        self.utilization = float(target_utilization)
        self.cc_default = float(container_concurrency_target_default)
        self.stable_s = float(stable_window_s)
        self.panic_s = self.stable_s * panic_window_percentage / 100.0
        self.panic_threshold = panic_threshold_percentage / 100.0
        self.max_up = float(max_scale_up_rate)
        self.max_down = float(max_scale_down_rate)
        self.grace_s = float(scale_to_zero_grace_s)
        self.to_zero = enable_scale_to_zero

    def initial_state(self) -> KPAState:
        return KPAState()

    def target_for(self, stage: str) -> float:
        """Per-pod target concurrency, as ``resources.MakeDecider`` computes it."""
        annotation = per_stage(self.target, stage, self.cc_default)
        assert annotation is not None
        cc = per_stage(self.cc, stage, 0.0) or 0.0
        base = min(cc, annotation) if cc > 0 else annotation
        return max(MIN_TARGET, base * self.utilization)

    def decide(self, tick: Tick, state: KPAState) -> tuple[dict[str, Target], KPAState]:
        now = tick.now_s
        new: dict[str, KPAStage] = {}
        out: dict[str, Target] = {}
        lo = self.bounds.min_replicas
        for _, s in stages(tick):
            prev = state.stages.get(s.name, KPAStage())
            samples = observed_concurrency(tick, s, prev.samples, self.stable_s + self.period_s)
            stable = window_mean(samples, now, self.stable_s)
            panic = window_mean(samples, now, self.panic_s)
            if stable is None or panic is None:
                n = self.bounds.clamp(s.replicas)
                new[s.name] = KPAStage(samples, prev.panic_since_s, prev.max_panic_pods)
                out[s.name] = Target(n, None, "no concurrency data yet: hold (ScaleValid false)")
                continue
            target = self.target_for(s.name)
            desired, st, why = kpa_scale(
                stable,
                panic,
                s.replicas,
                target,
                now,
                KPAStage(samples, prev.panic_since_s, prev.max_panic_pods, prev.zero_since_s),
                stable_window_s=self.stable_s,
                panic_threshold=self.panic_threshold,
                max_scale_up_rate=self.max_up,
                max_scale_down_rate=self.max_down,
            )
            zero_since = None
            if desired == 0:
                if not self.to_zero:
                    desired = 1
                elif lo == 0 and s.replicas > 0:
                    zero_since = now if st.zero_since_s is None else st.zero_since_s
                    if now - zero_since < self.grace_s:
                        desired = 1
                        why += f"; idle, scale-to-zero grace ({now - zero_since:.0f}s)"
            n = self.bounds.clamp(desired)
            new[s.name] = KPAStage(samples, st.panic_since_s, st.max_panic_pods, zero_since)
            out[s.name] = Target(n, None, why)
        return out, KPAState(new)


def build(bounds: Bounds, **options: Any) -> KnativeKPA:
    return KnativeKPA(bounds, **options)
