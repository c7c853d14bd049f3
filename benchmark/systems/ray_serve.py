"""Ray Serve's default autoscaling policy: ongoing requests per replica, with delays.

Defaults are ``ray.serve.config.AutoscalingConfig`` and the Serve
autoscaling guide (docs.ray.io/en/latest/serve/autoscaling-guide.html,
advanced-autoscaling.html): ``target_ongoing_requests`` 2,
``upscale_delay_s`` 30, ``downscale_delay_s`` 600, ``look_back_period_s``
30, ``upscaling_factor`` / ``downscaling_factor`` unset (the legacy
``smoothing_factor`` 1.0 applies), ``min_replicas`` 1.

The decision is python/ray/serve/autoscaling_policy.py, step by step:

1. ``_core_replica_queue_length_policy``: total ongoing requests (averaged
   over the look-back period) over ``target_ongoing_requests`` -- a float;
2. ``_apply_scaling_factors``: ``ceil(current + factor * (desired - current))``,
   minus one if rounding would block a wanted scale-down;
3. ``_apply_bounds``: min/max replicas;
4. ``_apply_delay_logic``: a scale-up (down) is applied only after it has been
   decided for more than ``int(upscale_delay_s / period)`` consecutive periods
   (``downscale_delay_s``; ``downscale_to_zero_delay_s`` for 1 -> 0), and
   any other decision resets the count;
5. ``_get_cold_start_scale_up_replicas``: a deployment at 0 replicas with
   requests waiting skips all of that and scales to
   ``max(ceil(upscaling_factor), current target)`` at once.

Ray's controller runs every 0.1 s (``CONTROL_LOOP_INTERVAL_S``); a simulator
of 1,000 functions cannot, so this model runs every ``period_s`` (1 s) and
converts the delays to periods of that length, which keeps them to within a
period.  "Ongoing requests" are requests queued or running at the replicas,
which record them every 0.5 s; the controller averages them over the look-back
period.  Here: the simulator's per-second averages of a 0.1 s sampling
(``Tick.concurrency``) averaged over ``look_back_period_s``; a harness without
them (live) gives one ``Tick.in_flight`` snapshot per tick instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .base import Bounds, Target, Tick
from .common import Samples, check_positive, observed_concurrency, per_stage, stages, window_mean

__all__ = ["RayServe", "RayStage", "RayState", "apply_delay", "apply_scaling_factor"]


class RayStage(NamedTuple):  # a tuple: built 1,000 times a second in the simulator
    samples: Samples = ()
    decision_counter: int = 0
    target_replicas: int | None = None


@dataclass(frozen=True)
class RayState:
    stages: Mapping[str, RayStage] = field(default_factory=dict)


def apply_scaling_factor(desired: float, current: int, up: float, down: float) -> int:
    """``_apply_scaling_factors``: move a fraction of the way, never stuck one short."""
    delta = desired - current
    factor = up if delta > 0 else down
    scaled = math.ceil(current + factor * delta)
    if math.ceil(desired) < current and scaled == current:
        scaled -= 1
    return scaled


def apply_delay(
    desired: int,
    current_target: int,
    counter: int,
    up_periods: int,
    down_periods: int,
    to_zero_periods: int,
) -> tuple[int, int]:
    """``_apply_delay_logic``: (decision, new counter); periods = int(delay / period)."""
    decision = current_target
    if desired > current_target:
        counter = max(counter, 0) + 1
        if counter > up_periods:
            counter, decision = 0, desired
    elif desired < current_target:
        counter = min(counter, 0) - 1
        if current_target == 1:
            periods = to_zero_periods
        else:
            periods = down_periods
            desired = max(1, desired)
        if counter < -periods:
            counter, decision = 0, desired
    else:
        counter = 0
    return decision, counter


class RayServe:
    scaleup = "cold"
    reads_concurrency = True  # the replicas' recorded ongoing requests, when the harness has them

    def __init__(
        self,
        bounds: Bounds,
        *,
        name: str = "ray-serve",
        target_ongoing_requests: float | Mapping[str, float] = 2.0,
        upscale_delay_s: float = 30.0,
        downscale_delay_s: float = 600.0,
        downscale_to_zero_delay_s: float | None = None,
        look_back_period_s: float = 30.0,
        upscaling_factor: float | None = None,
        downscaling_factor: float | None = None,
        smoothing_factor: float = 1.0,
        period_s: float = 1.0,
    ) -> None:
        check_positive("target_ongoing_requests", target_ongoing_requests)
        check_positive("upscale_delay_s", upscale_delay_s, allow_zero=True)
        check_positive("downscale_delay_s", downscale_delay_s, allow_zero=True)
        check_positive("downscale_to_zero_delay_s", downscale_to_zero_delay_s, allow_zero=True)
        for label, value in (
            ("look_back_period_s", look_back_period_s),
            ("upscaling_factor", upscaling_factor),
            ("downscaling_factor", downscaling_factor),
            ("smoothing_factor", smoothing_factor),
            ("period_s", period_s),
        ):
            check_positive(label, value)
        self.name = name
        self.bounds = bounds
        self.period_s = float(period_s)
        self.target = target_ongoing_requests
        self.look_back_s = float(look_back_period_s)
        self.up_factor = float(upscaling_factor or smoothing_factor)
        self.down_factor = float(downscaling_factor or smoothing_factor)
        self.up_periods = int(upscale_delay_s / period_s)
        self.down_periods = int(downscale_delay_s / period_s)
        zero = downscale_delay_s if downscale_to_zero_delay_s is None else downscale_to_zero_delay_s
        self.to_zero_periods = int(zero / period_s)

    def initial_state(self) -> RayState:
        return RayState()

    def decide(self, tick: Tick, state: RayState) -> tuple[dict[str, Target], RayState]:
        now = tick.now_s
        lo, hi = self.bounds.min_replicas, self.bounds.max_replicas
        new: dict[str, RayStage] = {}
        out: dict[str, Target] = {}
        for _, s in stages(tick):
            prev = state.stages.get(s.name, RayStage())
            current_target = self.bounds.clamp(
                s.replicas if prev.target_replicas is None else prev.target_replicas
            )
            samples = observed_concurrency(tick, s, prev.samples, self.look_back_s + self.period_s)
            total = window_mean(samples, now, self.look_back_s)
            running = s.replicas
            counter = prev.decision_counter
            if total is None:
                decision, why = current_target, "no ongoing-request metrics yet: hold"
            elif running == 0:
                decision = current_target
                if total > 0:
                    decision = max(math.ceil(self.up_factor), current_target)
                why = f"cold start: {total:.3g} ongoing at 0 replicas -> {decision}"
            else:
                target = per_stage(self.target, s.name, 2.0)
                assert target is not None
                raw = total / target
                scaled = apply_scaling_factor(raw, running, self.up_factor, self.down_factor)
                bounded = max(lo, min(hi, scaled))
                decision, counter = apply_delay(
                    bounded,
                    current_target,
                    counter,
                    self.up_periods,
                    self.down_periods,
                    self.to_zero_periods,
                )
                why = f"{total:.3g} ongoing / {target:g} -> {bounded}"
                if decision != bounded:
                    delay = self.up_periods if bounded > current_target else self.down_periods
                    why += f"; waiting {abs(counter)}/{delay + 1} periods, keep {decision}"
            decision = self.bounds.clamp(decision)
            new[s.name] = RayStage(samples, counter, decision)
            out[s.name] = Target(decision, None, why)
        return out, RayState(new)


def build(bounds: Bounds, **options: Any) -> RayServe:
    return RayServe(bounds, **options)
