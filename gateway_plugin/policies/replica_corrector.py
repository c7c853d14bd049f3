"""Pipeline-aware replica correction: M/M/c feedforward + PID feedback (Eq. 1-3).

Per stage, the M/M/c model (Eq. 1) gives the fewest replicas that meet the
stage's share of the pipeline SLO at the observed arrival and service rates.
That model assumes Poisson arrivals and exponential service; real stages are
burstier, and the p99 is not the mean.  A PID on the observed latency error
(Eq. 2) learns that bias and scales the model's count up (Eq. 3):

    corrected = c_mmc * (1 + u),     decision = max(c_mmc, corrected)

so the model reacts to load at once (feedforward) and the PID removes what
the model gets wrong (feedback): the two-degree-of-freedom structure that
Åström & Murray, *Feedback Systems*, recommend for combining the two.
Because the decision never goes below ``c_mmc``, a negative output would
have no effect: the PID's lower output limit defaults to 0 and its
anti-windup treats that as saturation.

While a stage runs *fewer* replicas than the model already asks for, its
latency is explained by that gap; feeding it to the PID would add the same
correction twice and overshoot, so the PID then only contributes the bias it
has already learned (its integral) and does not integrate.

Flapping is damped the HPA way: a tolerance band on the ratio desired/current,
scale-up at once, scale-down only after ``scale_down_periods`` consecutive
periods that want less (to the largest of those wishes).  Missing metrics hold
the current count (the M/M/c floor may still raise it) and never scale down.

One stage's period is a chain of steps, each a pure function returning
``(count, reason)``: ``missing_metrics``/``hold_on_missing`` (no data) or
``model_replicas`` (Eq. 1) -> ``pid_correction`` + ``corrected_count`` (Eq. 2-3)
-> ``apply_bounds`` -> ``tolerance_band`` -> ``hold_over_budget`` ->
``down_delay``.  The last step that moved the count is named in
``Correction.by`` (``steps.Step``).  ``split_slo``/``critical_stages`` live in
``budgets``, the burst-aware delay in ``burst``; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .budgets import critical_stages, split_slo, stage_budgets
from .burst import burst_cv, burstiness, down_delay_periods, rate_avg, rate_sq_avg
from .mmc import min_replicas_for
from .observation import PipelineObservation, StageObservation
from .pid import PIDConfig, PIDState, PIDStep, pid_step
from .steps import Step, last_change

__all__ = [
    "Correction",
    "CorrectorConfig",
    "CorrectorState",
    "correct_pipeline",
    "critical_stages",
    "down_delay_periods",
    "split_slo",
]

POLICY = "corrector"
_EPS = 1e-9


@dataclass(frozen=True, kw_only=True)
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
    # The window each arrival rate is counted over (``burst.rate_window_s`` of the period);
    # None: the period.  The burstiness estimate scales the rates' spread by it.
    rate_window_s: float | None = None

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
        if self.rate_window_s is not None and not self.rate_window_s > 0:
            raise ValueError("rate_window_s must be > 0 or None")


@dataclass(frozen=True, kw_only=True)
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


@dataclass(slots=True, kw_only=True)
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
    by: Step | None = None  # the step that set ``replicas`` (None: no step moved the count)


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
    budgets = stage_budgets(obs)
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


# ---------------------------------------------------------------- the steps, in order


def missing_metrics(latency: float | None, arrival_rate: float | None,
                    service_time_s: float | None, config: CorrectorConfig) -> tuple[str, ...]:
    """The metrics a decision needs and did not get: an explicit "no data" (Knative's
    ``ScaleValid: false``), never a zero."""
    if latency is not None and arrival_rate is not None and service_time_s is not None:
        return ()
    needed = ((f"latency_{config.latency_statistic}_s", latency),
              ("arrival_rate", arrival_rate), ("service_time_s", service_time_s))
    return tuple(name for name, value in needed if value is None)


def hold_on_missing(current: int, mmc: int | None, missing: Sequence[str],
                    config: CorrectorConfig) -> tuple[int, str]:
    """No data: hold ``current`` and never scale down (HPA's asymmetry); the M/M/c floor
    (when the rates are there) and ``min_replicas`` may still raise it."""
    target = max(current, config.min_replicas, mmc if mmc is not None else 0)
    why = f"missing {', '.join(missing)}: hold {current}, no scale-down on missing data"
    if target > current:
        why += f"; raised to {target} (M/M/c floor / min_replicas)"
    return target, why


def model_replicas(arrival_rate: float, service_time_s: float, budget: float,
                   mmc: int | None, config: CorrectorConfig) -> tuple[int, str]:
    """Eq. 1 (M/M/c, Erlang C): the fewest replicas that meet the budget, the feedforward.

    When no count meets it: a budget at or below the bare service time cannot be met by
    replicas (CPU can), so keep the queueing wait within ``tolerance`` of the service
    time; any other budget out of reach asks for ``max_replicas``.
    """
    hi = config.max_replicas
    if mmc is not None:
        return mmc, f"M/M/c needs {mmc} for {budget * 1e3:.1f} ms"
    if budget <= service_time_s:
        relaxed = min_replicas_for(arrival_rate, 1.0 / service_time_s,
                                   service_time_s * (1.0 + config.tolerance), hi)
        base = hi if relaxed is None else relaxed
        return base, (
            f"budget {budget * 1e3:.1f} ms <= service time {service_time_s * 1e3:.1f} ms: "
            f"replicas cannot meet it, keep {base} (wait within {config.tolerance:.0%})"
        )
    return hi, f"M/M/c cannot meet {budget * 1e3:.1f} ms within {hi} replicas"


def pid_correction(under: bool, hopeless: bool, latency: float, budget: float,
                   dt_s: float | None, prev: PIDState, config: PIDConfig) -> tuple[float, PIDStep]:
    """Eq. 2-3: the PID output ``u`` on the stage's relative latency error.

    Below the model's count (``under``) the gap explains the latency: only the bias
    already learned (the integral) counts and nothing integrates.  With a budget no
    count can meet (``hopeless``) there is nothing for replicas to correct: u = 0.
    """
    step = pid_step(budget, latency, dt_s, prev, config, freeze_integral=under or hopeless)
    if hopeless:
        return 0.0, step
    if under:
        return min(max(step.i_term, config.output_min), config.output_max), step
    return step.output, step


def corrected_count(base: int, u: float, critical: bool) -> tuple[float, int]:
    """Eq. 3: ``max(c_mmc, c_mmc * (1 + u))``, and the whole count it rounds to."""
    desired_real = max(float(base), base * (1.0 + u))
    return desired_real, _round(desired_real, critical)


def apply_bounds(desired: int, base: int, config: CorrectorConfig) -> tuple[int, str]:
    """``min_replicas`` <= count <= ``max_replicas``, never below the model's count."""
    bounded = min(max(desired, base, config.min_replicas), config.max_replicas)
    if bounded > desired:
        return bounded, f"raised to min_replicas {config.min_replicas}"
    if bounded < desired:
        return bounded, f"capped at max_replicas {config.max_replicas}"
    return bounded, ""


def tolerance_band(desired: int, desired_real: float, current: int, base: int,
                   config: CorrectorConfig) -> tuple[int, str]:
    """HPA's tolerance: hold ``current`` while desired/current is within ±tolerance of 1.

    Never below the model's count or outside the bounds: the band damps corrections,
    it does not excuse under-provisioning.
    """
    in_band = current > 0 and abs(desired_real / current - 1.0) <= config.tolerance
    if (in_band and desired != current and base <= current
            and config.min_replicas <= current <= config.max_replicas):
        return current, f"within ±{config.tolerance:.0%} band"
    return desired, ""


def hold_over_budget(desired: int, current: int, error: float) -> tuple[int, str]:
    """No scale-down while latency is above its budget: the model may think fewer replicas
    suffice (its rates lag a burst), but removing any now can only make latency worse."""
    if desired < current and error > 0:
        return current, "latency above budget: no scale-down"
    return desired, ""


def down_delay(desired: int, current: int, prev: CorrectorState,
               wait: int) -> tuple[int, str, int, int]:
    """Scale up at once; scale down after ``wait`` consecutive periods that want less, to
    the largest of those wishes (HPA's downscale stabilisation).

    Returns ``(replicas, verdict, down_streak, down_target)``.
    """
    if desired > current:
        return desired, f"scale up {current}->{desired}", 0, 0
    if desired == current:
        return current, f"hold {current}", 0, 0
    streak = prev.down_streak + 1
    pending = max(prev.down_target, desired) if prev.down_streak else desired
    if streak >= wait:
        return pending, f"scale down {current}->{pending} after {streak} periods", 0, 0
    return current, f"hold {current}, wants {desired} ({streak}/{wait} periods)", streak, pending


# ---------------------------------------------------------------- one stage


def _correct_stage(
    stage: StageObservation,
    latency: float | None,
    budget: float,
    critical: bool,
    prev: CorrectorState,
    dt_s: float | None,
    config: CorrectorConfig,
) -> Correction:
    """The steps above in order; the last one that moved the count is ``Correction.by``."""
    lam, service, current = stage.arrival_rate, stage.service_time_s, stage.replicas
    mmc: int | None = None
    if lam is not None and service is not None:
        mmc = min_replicas_for(lam, 1.0 / service, budget, config.max_replicas)
    missing = missing_metrics(latency, lam, service, config)
    if missing:
        return _no_data(stage, budget, critical, mmc, missing, prev, dt_s, config)
    assert latency is not None and lam is not None and service is not None
    base, model_note = model_replicas(lam, service, budget, mmc, config)
    under = current < base
    u, pid = pid_correction(under, budget <= service, latency, budget, dt_s, prev.pid, config.pid)
    desired_real, corrected = corrected_count(base, u, critical)
    pid_note = (f"latency {latency * 1e3:.1f} ms vs {budget * 1e3:.1f} ms "
                f"(e={pid.error:+.2f}, u={u:.2f}"
                + (", feedforward only: below model" if under else "") + ")")
    demand, bounds_note = apply_bounds(corrected, base, config)
    banded, band_note = tolerance_band(demand, desired_real, current, base, config)
    desired, budget_note = hold_over_budget(banded, current, pid.error)
    wait = (down_delay_periods(rate_avg(lam, prev, dt_s, config),
                               burstiness(lam, stage.arrival_cv, prev, dt_s, config), dt_s, config)
            if desired < current else config.scale_down_periods)
    replicas, verdict, streak, pending = down_delay(desired, current, prev, wait)
    note = "; ".join([n for n in (model_note, pid_note, band_note, budget_note) if n])
    by = last_change(POLICY, current, (
        ("mmc", base, model_note), ("pid", corrected, pid_note), ("bounds", demand, bounds_note),
        ("band", banded, band_note), ("over_budget", desired, budget_note),
        ("down_delay", replicas, verdict)))
    return Correction(
        name=stage.name, replicas=replicas, budget_s=budget, mmc_replicas=mmc, pid_output=u,
        critical=critical, reason=f"{verdict}: {note}",
        state=_next_state(stage, prev, dt_s, config, pid=pid.state, streak=streak,
                          pending=pending),
        demand=demand, by=by)


def _no_data(stage: StageObservation, budget: float, critical: bool, mmc: int | None,
             missing: tuple[str, ...], prev: CorrectorState, dt_s: float | None,
             config: CorrectorConfig) -> Correction:
    """The no-data result replaces every other step, so it always names itself."""
    target, why = hold_on_missing(stage.replicas, mmc, missing, config)
    return Correction(
        name=stage.name, replicas=target, budget_s=budget, mmc_replicas=mmc, pid_output=0.0,
        critical=critical, reason=why,
        state=_next_state(stage, prev, dt_s, config, pid=prev.pid, streak=0, pending=0),
        missing=missing, demand=target, by=Step(policy=POLICY, step="no_data", reason=why))


def _next_state(stage: StageObservation, prev: CorrectorState, dt_s: float | None,
                config: CorrectorConfig, *, pid: PIDState, streak: int,
                pending: int) -> CorrectorState:
    lam = stage.arrival_rate
    return CorrectorState(pid=pid, down_streak=streak, down_target=pending,
                          burst_cv=burst_cv(stage.arrival_cv, prev),
                          rate_avg=rate_avg(lam, prev, dt_s, config),
                          rate_sq_avg=rate_sq_avg(lam, prev, dt_s, config))
