"""What every compared system needs from a :class:`~benchmark.systems.base.Tick`.

The baselines read the same few things the real products read from their
metrics pipelines: a counter's ``rate()``, a gauge averaged or maximised over
a window, and a per-function setting.  They live here once so that each
system's module is only its documented decision logic.

Windows are kept as tuples of ``(t_s, value)`` inside the system's state, so a
state object is never mutated and can be replayed: the caller keeps the old
state if it wants to decide again from the same point.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import Any

from gateway_plugin.policies.observation import PipelineObservation, StageObservation

from .base import Bounds, Tick

__all__ = [
    "SUCCESS_CODES",
    "Samples",
    "check_positive",
    "clamp",
    "concurrency_of",
    "counter_of",
    "extend",
    "extrapolated_rate",
    "observed_concurrency",
    "per_stage",
    "push",
    "stages",
    "window_max",
    "window_mean",
]

Samples = tuple[tuple[float, float], ...]

SUCCESS_CODES = ("200", "2xx")
_TIME = itemgetter(0)
_VALUE = itemgetter(1)


def stages(tick: Tick) -> Iterator[tuple[PipelineObservation, StageObservation]]:
    """Every (pipeline, stage) of a tick; a stage name seen twice is a harness error.

    Targets are keyed by stage (OpenFaaS function) name, and function names
    are unique in a namespace, so two pipelines sharing a stage name would
    make the answer ambiguous.
    """
    seen: set[str] = set()
    for pipeline in tick.pipelines:
        for stage in pipeline.stages:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} appears in more than one pipeline")
            seen.add(stage.name)
            yield pipeline, stage


def per_stage(value: Any, stage: str, default: float | None) -> float | None:
    """A per-function setting given as one number for all, a mapping by stage, or None."""
    if value is None:
        return default
    if isinstance(value, Mapping):
        got = value.get(stage)
        return default if got is None else float(got)
    return float(value)


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Reject a bad option at construction, where the message can name it."""
    values = value.values() if isinstance(value, Mapping) else [value]
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
        if v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


def push(samples: Samples, now_s: float, value: float, keep_s: float) -> Samples:
    """Append a sample and drop those older than ``keep_s`` (a bounded window).

    Samples are in time order, so both ends are found by bisection: a system
    deciding for 1,000 functions every second cannot afford to scan windows.
    A sample already at ``now_s`` or later (a decision replayed) is replaced.
    """
    lo = bisect.bisect_right(samples, now_s - keep_s, key=_TIME)
    hi = bisect.bisect_left(samples, now_s, lo, key=_TIME)
    return samples[lo:hi] + ((now_s, float(value)),)


def extend(samples: Samples, new: Samples, keep_s: float) -> Samples:
    """Append several samples (in time order) and drop those older than ``keep_s`` before
    the newest; a sample not newer than the last kept one is skipped (a replayed tick)."""
    if not new:
        return samples
    last = samples[-1][0] if samples else -math.inf
    fresh = tuple((float(t), float(v)) for t, v in new if t > last)
    if not fresh:
        return samples
    merged = samples + fresh
    lo = bisect.bisect_right(merged, merged[-1][0] - keep_s, key=_TIME)
    return merged[lo:]


def observed_concurrency(tick: Tick, stage: StageObservation, samples: Samples,
                         keep_s: float) -> Samples:
    """The stage's concurrency window after this tick: the harness's per-second averages
    when it gives them (``Tick.concurrency``, what the platforms report), else one
    snapshot of ``concurrency_of`` at the tick."""
    got = tick.concurrency.get(stage.name)
    if got is not None:
        return extend(samples, got, keep_s)
    conc = concurrency_of(tick, stage)
    return samples if conc is None else push(samples, tick.now_s, conc, keep_s)


def _in_range(samples: Samples, now_s: float, range_s: float) -> Samples:
    # Prometheus 3 range selectors are left-open: (now - range, now]
    lo = bisect.bisect_right(samples, now_s - range_s, key=_TIME)
    hi = bisect.bisect_right(samples, now_s, lo, key=_TIME)
    return samples[lo:hi]


def window_mean(samples: Samples, now_s: float, range_s: float) -> float | None:
    got = _in_range(samples, now_s, range_s)
    if not got:
        return None
    return sum(map(_VALUE, got)) / len(got)


def window_max(samples: Samples, now_s: float, range_s: float) -> float | None:
    got = _in_range(samples, now_s, range_s)
    if not got:
        return None
    return max(map(_VALUE, got))


def extrapolated_rate(samples: Samples, now_s: float, range_s: float) -> float | None:
    """PromQL ``rate(counter[range])`` evaluated at ``now_s``; None when it has no result.

    Follows ``extrapolatedRate`` in prometheus/promql/functions.go: the
    increase between the first and last sample in the range (counter resets
    added back), extrapolated towards the range edges by at most half an
    average sample interval (and never below zero for a counter), divided by
    the range.  Fewer than two samples in the range give no result, which is
    why a ``rate()`` rule over a window shorter than two scrapes never fires.
    """
    got = _in_range(samples, now_s, range_s)
    if len(got) < 2:
        return None
    increase = 0.0
    for (_, a), (_, b) in itertools.pairwise(got):
        increase += b - a if b >= a else b  # a reset: the counter restarted at 0
    first_t, first_v = got[0]
    last_t = got[-1][0]
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    average = sampled / (len(got) - 1)
    threshold = average * 1.1
    to_start = first_t - (now_s - range_s)
    to_end = now_s - last_t
    if to_start >= threshold:
        to_start = average / 2
    if increase > 0 and first_v >= 0:
        to_zero = sampled * (first_v / increase)
        to_start = min(to_start, to_zero)
    if to_end >= threshold:
        to_end = average / 2
    return increase * (sampled + to_start + to_end) / sampled / range_s


def counter_of(tick: Tick, stage: str, codes: tuple[str, ...] | None) -> float | None:
    """A stage's cumulative invocation count for some status codes (None: all codes).

    ``None`` when the harness gave no counter for the stage: callers decide
    what a missing series means for their rule.
    """
    by_code = tick.invocations.get(stage)
    if by_code is None:
        return None
    if codes is None:
        return float(sum(by_code.values()))
    return float(sum(v for code, v in by_code.items() if code in codes))


def concurrency_of(tick: Tick, stage: StageObservation) -> float | None:
    """Requests queued or in service at a stage (Knative's concurrency, Ray's ongoing).

    The harness's ``in_flight`` gauge when it has one; otherwise Little's law
    on the period's averages (arrival rate x mean time in stage), which is
    the mean number in the stage; None when neither is known.
    """
    got = tick.in_flight.get(stage.name)
    if got is not None:
        return float(got)
    if stage.arrival_rate is not None and stage.latency_mean_s is not None:
        return stage.arrival_rate * stage.latency_mean_s
    return None


def clamp(bounds: Bounds, n: int, lo: int | None = None, hi: int | None = None) -> int:
    """A system's own limits first (its documented cap), then the harness's bounds."""
    if lo is not None:
        n = max(lo, n)
    if hi is not None:
        n = min(hi, n)
    return bounds.clamp(n)
