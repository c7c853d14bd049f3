"""Pipeline-aware replica correction: M/M/c feedforward + PID feedback (Eq. 1-3).

Per stage, the M/M/c model (Eq. 1) gives the fewest replicas that meet the
stage's share of the pipeline SLO at the observed arrival and service rates.
That model assumes Poisson arrivals and exponential service; real stages are
burstier, and the p99 is not the mean.  A PID on the observed latency error
(Eq. 2) learns that bias and scales the model's count up (Eq. 3):

    corrected = c_mmc * (1 + u),     decision = max(c_mmc, corrected)

so the model reacts to load at once (feedforward) and the PID removes what
the model gets wrong (feedback): the two-degree-of-freedom structure that
Åström & Murray, *Feedback Systems*, recommend for combining the two.  Because the decision never goes below
``c_mmc``, a negative output would have no effect: the PID's lower output
limit defaults to 0 and its anti-windup treats that as saturation.

While a stage runs *fewer* replicas than the model already asks for, its
latency is explained by that gap; feeding it to the PID would add the same
correction twice and overshoot, so the PID then only contributes the bias it
has already learned (its integral) and does not integrate.

Flapping is damped the HPA way: a tolerance band on the ratio desired/current,
scale-up at once, scale-down only after ``scale_down_periods`` consecutive
periods that want less (to the largest of those wishes).  Missing metrics hold
the current count (the M/M/c floor may still raise it) and never scale down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .mmc import min_replicas_for
from .observation import PipelineObservation, StageObservation, topological_order
from .pid import PIDConfig, PIDState, pid_step

__all__ = [
    "Correction",
    "CorrectorConfig",
    "CorrectorState",
    "correct_pipeline",
    "critical_stages",
    "split_slo",
]

_EPS = 1e-9


@dataclass(frozen=True)
class CorrectorConfig:
    pid: PIDConfig = field(default_factory=PIDConfig)
    min_replicas: int = 1
    max_replicas: int = 20  # OpenFaaS's default com.openfaas.scale.max
    tolerance: float = 0.1
    scale_down_periods: int = 3
    latency_statistic: str = "p99"
    # Burst-aware scale-down (see ``down_delay_periods``): z of the significance test
    # on a rate drop, and the longest the delay may grow to.
    burst_z: float = 2.0
    max_down_delay_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must be in [0, 1)")
        if self.scale_down_periods < 1:
            raise ValueError("scale_down_periods must be >= 1")
        if self.latency_statistic not in ("mean", "p99"):
            raise ValueError("latency_statistic must be 'mean' or 'p99'")
        if not (self.burst_z >= 0 and self.max_down_delay_s >= 0):
            raise ValueError("burst_z and max_down_delay_s must be >= 0")


@dataclass(frozen=True)
class CorrectorState:
    pid: PIDState = field(default_factory=PIDState)
    down_streak: int = 0
    down_target: int = 0
    # The last arrival CV seen: an idle gap has no inter-arrivals to measure, and
    # it is exactly then that a bursty stage must not forget it is bursty.
    burst_cv: float = 0.0
    # A slow average of the arrival rate (time constant max_down_delay_s / 2): the
    # rate a burst-aware delay is judged against, not one window's spike or gap.
    rate_avg: float = 0.0
    rate_sq_avg: float = 0.0  # the same average of the squared rate: their spread is burstiness


@dataclass(slots=True)
class Correction:
    name: str
    replicas: int
    budget_s: float
    mmc_replicas: int | None
    pid_output: float
    critical: bool
    reason: str
    state: CorrectorState
    missing: tuple[str, ...] = ()  # metrics that were absent: later steps must not scale down
    # What the model + PID want for the traffic observed, before the tolerance band
    # and the scale-down delay hold ``replicas`` at the current count.  Smoothing
    # scales this, not ``replicas``: a held count already carries last period's
    # headroom, and scaling it again would compound the headroom every period.
    demand: int | None = None


def split_slo(
    service_times: Sequence[float],
    slo_s: float,
    edges: Sequence[tuple[int, int]] | None = None,
) -> list[float]:
    """Each stage's latency budget, in proportion to its service time.

    On a chain, stage i gets ``slo * s_i / sum(s)``.  On a DAG a request only
    pays for one path at a time, so stage i gets ``slo * s_i / L_i`` with L_i
    the longest path (by service time) through i: every root-to-sink path then
    sums to at most the SLO, and the critical path to exactly it.
    """
    n = len(service_times)
    if n == 0:
        return []
    if not (math.isfinite(slo_s) and slo_s > 0):
        raise ValueError(f"slo_s must be a finite number > 0, got {slo_s!r}")
    if any(not (math.isfinite(s) and s > 0) for s in service_times):
        raise ValueError("service times must be finite numbers > 0")
    if edges is None:  # a chain: the plain proportional split
        total = sum(service_times)
        return [slo_s * s / total for s in service_times]
    pairs = list(edges)
    order = topological_order(n, pairs)
    parents: list[list[int]] = [[] for _ in range(n)]
    children: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        parents[b].append(a)
        children[a].append(b)
    to_node = [0.0] * n  # longest path ending at i, including i
    for i in order:
        to_node[i] = service_times[i] + max((to_node[p] for p in parents[i]), default=0.0)
    from_node = [0.0] * n  # longest path starting at i, including i
    for i in reversed(order):
        from_node[i] = service_times[i] + max((from_node[c] for c in children[i]), default=0.0)
    return [slo_s * s / (to_node[i] + from_node[i] - s) for i, s in enumerate(service_times)]


def critical_stages(
    latencies: Sequence[float | None],
    budgets: Sequence[float],
    queue_depths: Sequence[float | None],
) -> list[bool]:
    """Flag the stage(s) using most of their latency share, and the longest queue.

    A stage's share is ``latency / budget``; budgets are already proportional
    to service times, so this asks "who is furthest over (or least under) its
    fair part of the SLO", which is where a burst is hurting.  Ties flag all.
    """
    flags = [False] * len(budgets)
    ratios = [None if lat is None else lat / b for lat, b in zip(latencies, budgets, strict=True)]
    known = [r for r in ratios if r is not None]
    if known:
        top = max(known)
        for i, r in enumerate(ratios):
            if r is not None and r >= top - _EPS:
                flags[i] = True
    queues = [q for q in queue_depths if q is not None]
    if queues and max(queues) > 0:
        top_q = max(queues)
        for i, q in enumerate(queue_depths):
            if q is not None and q >= top_q - _EPS:
                flags[i] = True
    return flags


def _stage_budgets(obs: PipelineObservation) -> list[float]:
    times = [s.service_time_s for s in obs.stages]
    known = [t for t in times if t is not None]
    # A stage without a service-time sample gets the mean of the others: the
    # split only needs weights, and equal weights are the honest default.
    fill = sum(known) / len(known) if known else 1.0
    edges = None if obs.edges is None else obs.edge_indices()
    return split_slo([fill if t is None else t for t in times], obs.slo_s, edges)


def down_delay_periods(arrival_rate: float | None, arrival_cv: float | None,
                       dt_s: float | None, config: CorrectorConfig) -> int:
    """Periods a scale-down waits: ``scale_down_periods``, longer for bursty arrivals.

    A drop in the measured rate is only evidence of less load once it is larger
    than the counting noise.  For a renewal process with inter-arrival CV ``c``
    the count in a window of length T has variance ~ c² λ T (the index of
    dispersion of counts tends to c², Cox & Lewis, *The Statistical Analysis of
    Series of Events*, 1966, §4.5), so the relative error of the rate over T is
    c / sqrt(λ T).  Asking for that error to be at most 1/z (a z-sigma drop, z = 2
    by default) gives

        T >= z² c² / λ

    Poisson traffic (c = 1) at 5/s needs 0.8 s, i.e. the plain delay; CV 8 at
    5/s needs 51 s: the idle gaps between bursts are not a fall in load.  During a
    gap λ shrinks and T grows, up to ``max_down_delay_s``.  This is the same
    reasoning as Knative's 60 s stable window, derived from the observed CV
    instead of fixed.
    """
    base = config.scale_down_periods
    if (arrival_cv is None or arrival_cv <= 1.0 or not dt_s or dt_s <= 0
            or config.burst_z == 0):
        return base
    if not arrival_rate or arrival_rate <= 0:
        hold_s = config.max_down_delay_s
    else:
        hold_s = min(config.max_down_delay_s,
                     config.burst_z ** 2 * arrival_cv ** 2 / arrival_rate)
    return max(base, math.ceil(hold_s / dt_s - 1e-9))


def _burst_cv(observed: float | None, prev: CorrectorState) -> float:
    return prev.burst_cv if observed is None else float(observed)


def _rate_avg(rate: float | None, prev: CorrectorState, dt_s: float | None,
              config: CorrectorConfig) -> float:
    """Exponentially weighted rate, time constant ``max_down_delay_s / 2``."""
    if rate is None:
        return prev.rate_avg
    return _ewma(float(rate), prev.rate_avg, dt_s, config)


def _ewma(value: float, prev: float, dt_s: float | None, config: CorrectorConfig) -> float:
    if prev <= 0 or not dt_s or dt_s <= 0:
        return value
    tau = max(config.max_down_delay_s / 2.0, 1e-9)
    return prev + dt_s / (dt_s + tau) * (value - prev)


def _rate_sq_avg(rate: float | None, prev: CorrectorState, dt_s: float | None,
                 config: CorrectorConfig) -> float:
    if rate is None:
        return prev.rate_sq_avg
    return _ewma(float(rate) ** 2, prev.rate_sq_avg, dt_s, config)


def _burstiness(rate: float | None, observed_cv: float | None, prev: CorrectorState,
                dt_s: float | None, config: CorrectorConfig) -> float:
    """sqrt of the index of dispersion of per-period counts, or the window's CV if larger.

    One window's inter-arrival CV misses clumping at longer time scales (a 10 s
    window inside a CV-8 gamma process reads ~3); the spread of the per-period
    rates does not: IDC(dt) = Var(N_dt) / E[N_dt] = dt * Var(rate) / mean(rate),
    which tends to c² for a renewal process (Cox & Lewis 1966, §4.5).
    """
    avg = _rate_avg(rate, prev, dt_s, config)
    sq = _rate_sq_avg(rate, prev, dt_s, config)
    cv = _burst_cv(observed_cv, prev)
    if avg <= 0 or not dt_s or dt_s <= 0:
        return cv
    idc = dt_s * max(0.0, sq - avg * avg) / avg
    return max(cv, math.sqrt(idc))


def _round(value: float, critical: bool) -> int:
    # Critical stages round up (any fraction of a replica short is a miss);
    # the others round to nearest so a rounding artefact does not cost a replica.
    if critical:
        return math.ceil(value - _EPS)
    return math.floor(value + 0.5)


def correct_pipeline(
    obs: PipelineObservation,
    states: Mapping[str, CorrectorState],
    dt_s: float | None,
    config: CorrectorConfig,
) -> tuple[list[Correction], dict[str, CorrectorState]]:
    """One control period of replica correction for every stage of a pipeline."""
    budgets = _stage_budgets(obs)
    stat = config.latency_statistic
    latencies = [s.latency(stat) for s in obs.stages]
    critical = critical_stages(latencies, budgets, [s.queue_depth for s in obs.stages])
    out: list[Correction] = []
    new_states: dict[str, CorrectorState] = {}
    for i, stage in enumerate(obs.stages):
        prev = states.get(stage.name, CorrectorState())
        corr = _correct_stage(stage, latencies[i], budgets[i], critical[i], prev, dt_s, config)
        out.append(corr)
        new_states[stage.name] = corr.state
    return out, new_states


def _correct_stage(
    stage: StageObservation,
    latency: float | None,
    budget: float,
    critical: bool,
    prev: CorrectorState,
    dt_s: float | None,
    config: CorrectorConfig,
) -> Correction:
    current = stage.replicas
    lo, hi = config.min_replicas, config.max_replicas
    lam, service = stage.arrival_rate, stage.service_time_s
    mmc: int | None = None
    if lam is not None and service is not None:
        mmc = min_replicas_for(lam, 1.0 / service, budget, hi)

    missing: tuple[str, ...] = ()
    if latency is None or lam is None or service is None:
        missing = tuple(
            name
            for name, value in (
                (f"latency_{config.latency_statistic}_s", latency),
                ("arrival_rate", lam),
                ("service_time_s", service),
            )
            if value is None
        )
    if missing:
        target = max(current, lo, mmc if mmc is not None else 0)
        why = f"missing {', '.join(missing)}: hold {current}, no scale-down on missing data"
        if target > current:
            why += f"; raised to {target} (M/M/c floor / min_replicas)"
        state = CorrectorState(pid=prev.pid, down_streak=0, down_target=0,
                               burst_cv=_burst_cv(stage.arrival_cv, prev),
                               rate_avg=_rate_avg(stage.arrival_rate, prev, dt_s, config),
                               rate_sq_avg=_rate_sq_avg(stage.arrival_rate, prev, dt_s,
                                                        config))
        return Correction(stage.name, target, budget, mmc, 0.0, critical, why, state, missing,
                          target)

    assert latency is not None and lam is not None and service is not None
    hopeless = budget <= service
    if mmc is not None:
        base = mmc
        model_note = f"M/M/c needs {mmc} for {budget * 1e3:.1f} ms"
    elif hopeless:
        # No replica count beats the bare service time; CPU can, replicas
        # cannot.  Keep the queueing wait within the tolerance of it and do
        # not let the PID chase an error that replicas cannot remove.
        relaxed = min_replicas_for(lam, 1.0 / service, service * (1.0 + config.tolerance), hi)
        base = hi if relaxed is None else relaxed
        model_note = (
            f"budget {budget * 1e3:.1f} ms <= service time {service * 1e3:.1f} ms: "
            f"replicas cannot meet it, keep {base} (wait within {config.tolerance:.0%})"
        )
    else:
        base = hi
        model_note = f"M/M/c cannot meet {budget * 1e3:.1f} ms within {hi} replicas"

    under = current < base
    step = pid_step(budget, latency, dt_s, prev.pid, config.pid, freeze_integral=under or hopeless)
    u = step.output
    if hopeless:
        u = 0.0
    elif under:
        u = min(max(step.i_term, config.pid.output_min), config.pid.output_max)
    desired_real = max(float(base), base * (1.0 + u))
    desired = _round(desired_real, critical)
    desired = min(max(desired, base, lo), hi)
    demand = desired
    note = (
        f"{model_note}; latency {latency * 1e3:.1f} ms vs {budget * 1e3:.1f} ms "
        f"(e={step.error:+.2f}, u={u:.2f}"
        + (", feedforward only: below model" if under else "")
        + ")"
    )

    in_band = current > 0 and abs(desired_real / current - 1.0) <= config.tolerance
    if in_band and desired != current and base <= current and lo <= current <= hi:
        # Never hold below the model's minimum: the band damps corrections,
        # it does not excuse under-provisioning.
        desired = current
        note += f"; within ±{config.tolerance:.0%} band"

    if desired < current and step.error > 0:
        # Latency is above its budget: the model may think fewer replicas suffice (its
        # rates lag a burst), but removing any now can only make the latency worse.
        desired = current
        note += "; latency above budget: no scale-down"

    streak, pending = 0, 0
    if desired > current:
        reason = f"scale up {current}->{desired}: {note}"
        replicas = desired
    elif desired == current:
        reason = f"hold {current}: {note}"
        replicas = current
    else:
        streak = prev.down_streak + 1
        pending = max(prev.down_target, desired) if prev.down_streak else desired
        wait = down_delay_periods(_rate_avg(lam, prev, dt_s, config),
                                  _burstiness(lam, stage.arrival_cv, prev, dt_s, config),
                                  dt_s, config)
        if streak >= wait:
            replicas = pending
            reason = f"scale down {current}->{pending} after {streak} periods: {note}"
            streak, pending = 0, 0
        else:
            replicas = current
            reason = (
                f"hold {current}, wants {desired} "
                f"({streak}/{wait} periods): {note}"
            )
    state = CorrectorState(pid=step.state, down_streak=streak, down_target=pending,
                           burst_cv=_burst_cv(stage.arrival_cv, prev),
                           rate_avg=_rate_avg(lam, prev, dt_s, config),
                           rate_sq_avg=_rate_sq_avg(lam, prev, dt_s, config))
    return Correction(stage.name, replicas, budget, mmc, u, critical, reason, state, (), demand)
