"""CV-based pipeline smoothing (Eq. 6): move replicas to where burstiness is heading.

The replica corrector sizes each stage for the traffic it saw.  A burst that
has just entered stage 0 reaches stage 2 one or two periods later; the CV
predictor (Eq. 4-5, ``cv_predict``) says so in advance.  Smoothing rescales
each stage's corrected count by how much that change in arrival CV changes
the replicas a G/G/c queue needs.

Allen-Cunneen (Allen, *Probability, Statistics, and Queueing Theory*, 2nd ed.,
1990; also in Gross & Harris among the G/G/c approximations) scales the M/M/c wait
by the variability of arrivals and service:

    W_q(G/G/c) ~= W_q(M/M/c) * (c_a^2 + c_s^2) / 2

Let ``g(c_a)`` be the smallest replica count whose Allen-Cunneen delay meets
the stage budget.  Eq. 6 keeps the correction the PID has learned and scales
it by the change in that need:

    r' = r * g(c_a_predicted) / g(c_a_observed)                    (Eq. 6)

    rising CV  -> r' rounded up (headroom before the burst lands)
    falling CV -> r' rounded to nearest, released only after
                  ``release_periods`` consecutive falling forecasts, never for
                  a critical stage, and never below the M/M/c floor for the
                  stage budget (``min_replicas_for``) or ``min_replicas``.

With ``max_pipeline_replicas`` set, increases are funded first by the
replicas other stages release, critical stages served first, and capped at
the pipeline's total: that is the "reallocation" of the paper in a cluster
that cannot grow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .mmc import min_replicas_for, mmc_queue_wait
from .steps import Step

__all__ = [
    "Smoothed",
    "SmootherConfig",
    "SmootherState",
    "SmoothingInput",
    "allen_cunneen_wait",
    "min_replicas_ggc",
    "pipeline_cap",
    "smooth_pipeline",
    "smooth_stage",
]

POLICY = "smoother"


@dataclass(frozen=True, kw_only=True)
class SmootherConfig:
    cv_tolerance: float = 0.1
    release_periods: int = 2
    min_replicas: int = 1
    max_replicas: int = 20
    max_pipeline_replicas: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.cv_tolerance < 1:
            raise ValueError("cv_tolerance must be in [0, 1)")
        if self.release_periods < 1:
            raise ValueError("release_periods must be >= 1")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")


@dataclass(frozen=True)
class SmootherState:
    falling_streak: int = 0


_STEADY = SmootherState()  # shared: frozen, and most stages are steady most periods


@dataclass(slots=True, kw_only=True)
class SmoothingInput:
    name: str
    replicas: int
    budget_s: float
    arrival_rate: float | None
    service_time_s: float | None
    service_cv: float | None
    arrival_cv: float | None
    predicted_cv: float | None
    critical: bool = False
    mmc_floor: int | None = None  # min_replicas_for(budget) if the caller has it already
    may_release: bool = True  # False when the corrector held on missing data
    demand: int | None = None  # the corrector's unheld count (Correction.demand); None: replicas


@dataclass(slots=True, kw_only=True)
class Smoothed:
    name: str
    replicas: int
    mmc_floor: int | None
    reason: str
    state: SmootherState
    by: Step | None = None  # the step that changed the corrected count (None: unchanged)


def allen_cunneen_wait(
    arrival_rate: float, service_rate: float, replicas: int, arrival_cv: float, service_cv: float
) -> float:
    """G/G/c mean queueing wait by Allen-Cunneen; ``math.inf`` when unstable."""
    factor = (arrival_cv**2 + service_cv**2) / 2.0
    wait = mmc_queue_wait(arrival_rate, service_rate, replicas)
    return wait if math.isinf(wait) else wait * factor


def min_replicas_ggc(
    arrival_rate: float,
    service_rate: float,
    budget_s: float,
    arrival_cv: float,
    service_cv: float,
    max_replicas: int | None = None,
) -> int | None:
    """Smallest c whose Allen-Cunneen delay W_q + 1/mu meets the budget, else None.

    The AC wait is the M/M/c wait times a constant k, so this is the M/M/c
    search with the queueing part of the budget divided by k.
    """
    if not (math.isfinite(arrival_cv) and math.isfinite(service_cv)):
        raise ValueError("CVs must be finite numbers >= 0")
    if arrival_cv < 0 or service_cv < 0:
        raise ValueError("CVs must be finite numbers >= 0")
    k = (arrival_cv**2 + service_cv**2) / 2.0
    service_time = 1.0 / service_rate
    if k == 0.0:  # deterministic: no wait once stable
        if budget_s < service_time:
            return None
        c = math.floor(arrival_rate / service_rate) + 1 if arrival_rate > 0 else 1
        return c if max_replicas is None or c <= max_replicas else None
    if budget_s <= service_time:
        return min_replicas_for(arrival_rate, service_rate, budget_s, max_replicas)
    scaled = service_time + (budget_s - service_time) / k
    return min_replicas_for(arrival_rate, service_rate, scaled, max_replicas)


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def add_headroom(x: SmoothingInput, need_now: int, need_next: int, hi: int) -> tuple[int, str]:
    """Eq. 6, rising CV: ``r * g(next) / g(now)`` rounded up, at least ``r``, at most ``hi``.

    Headroom on what the observed traffic needs (``demand``), not on the possibly
    held count: a count held by the band or the scale-down delay already carries
    last period's headroom, and scaling it again would ratchet up every period.
    """
    r = x.replicas
    base = x.demand if x.demand is not None else r
    target = min(max(math.ceil(base * need_next / need_now - 1e-9), r), hi)
    return target, (f"+{target - r} headroom" if target > r else "no change")


def release(x: SmoothingInput, scaled: float, floor: int | None, prev: SmootherState,
            config: SmootherConfig, g_note: str) -> tuple[int, str, SmootherState]:
    """Eq. 6, falling CV: ``scaled`` rounded to nearest, released only after
    ``release_periods`` falling forecasts in a row, never by a critical stage or one
    held on missing data, never below the M/M/c floor or ``min_replicas``.

    Returns ``(replicas, what happened after "falling", next state)``.
    """
    r = x.replicas
    if x.critical:
        return r, f", critical stage keeps {r}", _STEADY
    if not x.may_release:
        return r, f", keeps {r} (missing data)", _STEADY
    streak = prev.falling_streak + 1
    lowest = max(floor if floor is not None else r, config.min_replicas)
    target = min(r, max(math.floor(scaled + 0.5), lowest))
    if streak < config.release_periods:
        return r, f" ({streak}/{config.release_periods}), keeps {r}", SmootherState(
            falling_streak=streak)
    if target == r:
        return r, f", {g_note}, M/M/c floor {floor}: keeps {r}", SmootherState(
            falling_streak=streak)
    return target, f", {g_note}: release {r - target} (M/M/c floor {floor})", _STEADY


def smooth_stage(x: SmoothingInput, prev: SmootherState, config: SmootherConfig) -> Smoothed:
    """Eq. 6 for one stage: unchanged unless both CVs are known and apart by more than
    ``cv_tolerance``; then ``add_headroom`` (rising) or ``release`` (falling)."""
    if x.arrival_rate is None or x.service_time_s is None:
        return _unchanged(x, None, "smoothing: no rates, unchanged")
    mu = 1.0 / x.service_time_s
    hi = config.max_replicas
    floor = x.mmc_floor
    if floor is None:
        floor = min_replicas_for(x.arrival_rate, mu, x.budget_s, hi)
    if not (_positive(x.arrival_cv) and _positive(x.predicted_cv)):
        return _unchanged(x, floor, "smoothing: no observed/predicted CV, unchanged")
    assert x.arrival_cv is not None and x.predicted_cv is not None
    cs = x.service_cv if x.service_cv is not None else 1.0  # exponential if unknown
    now, nxt = x.arrival_cv, x.predicted_cv
    cv_note = f"arrival CV {now:.2f}->{nxt:.2f}"
    if abs(nxt - now) <= config.cv_tolerance * now:
        return _unchanged(x, floor, f"smoothing: {cv_note} steady")
    need_now = min_replicas_ggc(x.arrival_rate, mu, x.budget_s, now, cs, hi)
    need_next = min_replicas_ggc(x.arrival_rate, mu, x.budget_s, nxt, cs, hi)
    if need_now is None or need_next is None:
        return _unchanged(x, floor, f"smoothing: {cv_note}, budget out of reach, unchanged")
    g_note = f"G/G/c need {need_now}->{need_next}"
    if nxt > now:
        target, why = add_headroom(x, need_now, need_next, hi)
        return _smoothed(x, floor, target, f"smoothing: {cv_note} rising, {g_note}: {why}",
                         _STEADY, "headroom")
    scaled = x.replicas * need_next / need_now
    target, why, state = release(x, scaled, floor, prev, config, g_note)
    return _smoothed(x, floor, target, f"smoothing: {cv_note} falling{why}", state, "release")


def _unchanged(x: SmoothingInput, floor: int | None, why: str) -> Smoothed:
    return Smoothed(name=x.name, replicas=x.replicas, mmc_floor=floor, reason=why,
                    state=_STEADY)


def _smoothed(x: SmoothingInput, floor: int | None, target: int, why: str,
              state: SmootherState, step: str) -> Smoothed:
    by = None if target == x.replicas else Step(policy=POLICY, step=step, reason=why)
    return Smoothed(name=x.name, replicas=target, mmc_floor=floor, reason=why, state=state,
                    by=by)


def pipeline_cap(stages: Sequence[SmoothingInput], replicas: Sequence[int],
                 cap: int) -> list[tuple[int, str]]:
    """Fund increases from what other stages release, critical stages first, up to ``cap``
    replicas for the whole pipeline: the paper's reallocation in a cluster that cannot grow.

    Returns ``(replicas, reason)`` per stage; the reason is empty where nothing was cut.
    """
    out = [(r, "") for r in replicas]
    if sum(replicas) <= cap:
        return out
    base = [min(x.replicas, r) for x, r in zip(stages, replicas, strict=True)]
    room = cap - sum(base)
    order = sorted(
        (i for i, x in enumerate(stages) if replicas[i] > base[i]),
        key=lambda i: (not stages[i].critical, -(replicas[i] - base[i])),
    )
    for i in order:
        want = replicas[i] - base[i]
        grant = max(min(want, room), 0)
        why = f"pipeline cap {cap}: granted +{grant} of +{want}" if grant < want else ""
        out[i] = (base[i] + grant, why)
        room -= grant
    return out


def smooth_pipeline(
    stages: Sequence[SmoothingInput],
    states: Mapping[str, SmootherState],
    config: SmootherConfig,
) -> tuple[list[Smoothed], dict[str, SmootherState]]:
    """Eq. 6 for every stage of one pipeline, then the optional pipeline cap."""
    out = [smooth_stage(x, states.get(x.name, _STEADY), config) for x in stages]
    cap = config.max_pipeline_replicas
    if cap is not None:
        capped = pipeline_cap(stages, [s.replicas for s in out], cap)
        for s, (r, why) in zip(out, capped, strict=True):
            if r != s.replicas:
                s.by = Step(policy=POLICY, step="cap", reason=why)
            s.replicas = r
            if why:
                s.reason += f"; {why}"
    return out, {s.name: s.state for s in out}
