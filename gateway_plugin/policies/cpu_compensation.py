"""Adaptive CPU compensation for consolidated stages (Eq. 7-10, Algorithm 2).

When smoothing takes replicas away from a stage, the replicas that remain
carry their share of the load.  Each gets more CPU, sized by a demand model
and handed out in steps that are kept only while they pay off in latency.

Demand model, per remaining replica:

    lambda_r = lambda / r_after                                       (Eq. 7)
    u        = lambda_r * tau          busy cores, tau = CPU-s per request (Eq. 8)
    rho_b    = x / (1 + x),  x = rho* / ((1 - rho*) * K),  K = (c_a^2 + c_s^2)/2  (Eq. 9)
    D        = clamp(u / rho_b, min_cpu, max_cpu)                     (Eq. 10)

Eq. 9 is Kingman's heavy-traffic form (Kingman 1961; Gross & Harris, G/G/1
bounds): the wait grows as rho/(1 - rho) * K.  Planning for Poisson traffic at
utilisation rho* and asking bursty traffic (K > 1) for the *same* wait gives
the lower utilisation rho_b, i.e. more CPU for burstier input.

Algorithm 2 (incremental allocation, one step per control period):

    1. a consolidation (r_after < r_before) starts compensation from the
       current allocation (the baseline);
    2. while active and below D: add ``increment_ratio * (D - cpu)`` (at least
       ``min_step``), remember the step and the latency before it;
    3. next period: if latency fell by more than ``improve_tolerance`` keep the
       step and go on; otherwise roll that step back and stop (plateau) until
       the demand rises again;
    4. when the demand falls below the allocation, give CPU back down to
       max(D, baseline); at the baseline compensation ends.

Missing metrics hold the allocation and leave a pending step unjudged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .steps import Step

__all__ = [
    "CPUConfig",
    "CPUDecision",
    "CPUInput",
    "CPUState",
    "compensate",
    "compensate_pipeline",
    "cpu_demand",
    "give_back",
    "increment",
    "judge_step",
]

POLICY = "cpu"


@dataclass(frozen=True, kw_only=True)
class CPUConfig:
    min_cpu: float = 1.0
    max_cpu: float = 16.0
    increment_ratio: float = 0.25
    target_utilisation: float = 0.7
    improve_tolerance: float = 0.02
    min_step: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.min_cpu <= self.max_cpu:
            raise ValueError("need 0 < min_cpu <= max_cpu")
        if not 0 < self.increment_ratio <= 1:
            raise ValueError("increment_ratio must be in (0, 1]")
        if not 0 < self.target_utilisation < 1:
            raise ValueError("target_utilisation must be in (0, 1)")
        if not 0 <= self.improve_tolerance < 1 or self.min_step < 0:
            raise ValueError("improve_tolerance must be in [0, 1) and min_step >= 0")


@dataclass(frozen=True, kw_only=True)
class CPUState:
    cpu: float | None = None
    baseline: float | None = None
    active: bool = False
    last_step: float = 0.0
    latency_before: float | None = None
    plateau_demand: float | None = None


@dataclass(slots=True, kw_only=True)
class CPUInput:
    name: str
    replicas_before: int
    replicas_after: int
    arrival_rate: float | None
    cpu_s_per_request: float | None
    latency_s: float | None
    arrival_cv: float | None = None
    service_cv: float | None = None
    cpu_cores: float | None = None


@dataclass(slots=True, kw_only=True)
class CPUDecision:
    name: str
    cpu: float
    demand: float | None
    reason: str
    state: CPUState
    by: Step | None = None  # the step that moved the allocation (None: unchanged)


def cpu_demand(
    arrival_rate: float,
    cpu_s_per_request: float,
    replicas: int,
    config: CPUConfig,
    arrival_cv: float | None = None,
    service_cv: float | None = None,
) -> float:
    """Eq. 7-10: cores each of ``replicas`` replicas needs; unknown CVs count as 1."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    per_replica = arrival_rate / replicas  # Eq. 7
    busy = per_replica * cpu_s_per_request  # Eq. 8
    ca = 1.0 if arrival_cv is None else arrival_cv
    cs = 1.0 if service_cv is None else service_cv
    k = max((ca * ca + cs * cs) / 2.0, 1e-6)
    rho_star = config.target_utilisation
    x = rho_star / ((1.0 - rho_star) * k)
    rho_b = x / (1.0 + x)  # Eq. 9
    return min(max(busy / rho_b, config.min_cpu), config.max_cpu)  # Eq. 10


def _demand(x: CPUInput, config: CPUConfig) -> float | None:
    if x.arrival_rate is None or x.cpu_s_per_request is None or x.replicas_after < 1:
        return None
    return cpu_demand(x.arrival_rate, x.cpu_s_per_request, x.replicas_after, config,
                      x.arrival_cv, x.service_cv)


def judge_step(cpu: float, baseline: float, latency_s: float, latency_before: float,
               last_step: float, config: CPUConfig) -> tuple[float, str] | None:
    """Alg. 2 step 3: keep last period's step if latency fell by more than
    ``improve_tolerance``, else roll it back; ``None`` when it is kept."""
    if latency_s < latency_before * (1.0 - config.improve_tolerance):
        return None
    back = max(cpu - last_step, baseline)
    return back, (f"cpu {cpu:.2f}->{back:.2f}: rollback, latency {latency_s * 1e3:.1f} ms did "
                  f"not improve on {latency_before * 1e3:.1f} ms")


def give_back(cpu: float, demand: float, baseline: float,
              config: CPUConfig) -> tuple[float, str] | None:
    """Alg. 2 step 4: demand below the allocation gives CPU back, down to max(D, baseline);
    ``None`` when the demand does not fall below it."""
    if demand >= cpu * (1.0 - config.improve_tolerance):
        return None
    back = max(demand, baseline)
    ends = back <= baseline + 1e-9
    return back, f"cpu {cpu:.2f}->{back:.2f}: give back, demand {demand:.2f}" + (
        " (baseline)" if ends else "")


def increment(cpu: float, demand: float, config: CPUConfig) -> tuple[float, str] | None:
    """Alg. 2 step 2: add ``increment_ratio * (D - cpu)`` (at least ``min_step``), up to D and
    ``max_cpu``; ``None`` when the allocation already meets the demand."""
    if not (demand > cpu + 1e-9 and cpu < config.max_cpu):
        return None
    step = max(config.increment_ratio * (demand - cpu), config.min_step)
    new = min(cpu + step, demand, config.max_cpu)
    return new, f"cpu {cpu:.2f}->{new:.2f}: step {new - cpu:.2f} towards demand {demand:.2f}"


def compensate(x: CPUInput, state: CPUState, config: CPUConfig) -> CPUDecision:
    """One period of Algorithm 2 for one stage: ``judge_step`` -> ``give_back`` ->
    (plateau) -> ``increment``; the step that moved the allocation is ``CPUDecision.by``."""
    cpu = state.cpu if state.cpu is not None else x.cpu_cores
    if cpu is None:
        cpu = config.min_cpu
    demand = _demand(x, config)
    consolidated = 0 < x.replicas_after < x.replicas_before
    if not (state.active or consolidated):
        # the common case, kept cheap: a thousand stages go through here each period
        kept = state if state.cpu == cpu else CPUState(cpu=cpu)
        return CPUDecision(name=x.name, cpu=cpu, demand=demand, state=kept,
                           reason=f"cpu {cpu:.2f}: no consolidation, unchanged")
    here = replace(state, cpu=cpu)

    def out(new_cpu: float, step: str, why: str, **changes: Any) -> CPUDecision:
        by = None if new_cpu == cpu else Step(policy=POLICY, step=step, reason=why)
        return CPUDecision(name=x.name, cpu=new_cpu, demand=demand, reason=why,
                           state=replace(here, cpu=new_cpu, **changes), by=by)

    if demand is None or x.latency_s is None:
        return out(cpu, "no_data", f"cpu {cpu:.2f}: missing rate/CPU time/latency, hold")
    d_note = f"demand {demand:.2f}"
    baseline = state.baseline if state.active and state.baseline is not None else cpu
    if consolidated and not state.active:
        here = replace(here, active=True, baseline=baseline, plateau_demand=None)
    if state.last_step > 0 and state.latency_before is not None:
        judged = judge_step(cpu, baseline, x.latency_s, state.latency_before,
                            state.last_step, config)
        if judged is not None:
            return out(judged[0], "rollback", f"{judged[1]} ({d_note})", last_step=0.0,
                       latency_before=None, plateau_demand=demand)
        here = replace(here, last_step=0.0, latency_before=None)
    given = give_back(cpu, demand, baseline, config)
    if given is not None:
        return out(given[0], "give_back", given[1], active=given[0] > baseline + 1e-9,
                   last_step=0.0, latency_before=None)
    plateau = here.plateau_demand
    if plateau is not None and demand <= plateau * (1.0 + config.improve_tolerance):
        return out(cpu, "plateau", f"cpu {cpu:.2f}: plateau after rollback ({d_note})")
    stepped = increment(cpu, demand, config)
    if stepped is None:
        return out(cpu, "meets", f"cpu {cpu:.2f}: meets {d_note}")
    why = stepped[1] + (f" (consolidated {x.replicas_before}->{x.replicas_after})"
                        if consolidated else "")
    return out(stepped[0], "increment", why, last_step=stepped[0] - cpu,
               latency_before=x.latency_s, plateau_demand=None)


def compensate_pipeline(
    inputs: Sequence[CPUInput], states: Mapping[str, CPUState], config: CPUConfig
) -> tuple[list[CPUDecision], dict[str, CPUState]]:
    """Algorithm 2 for every stage of one pipeline."""
    decisions = [compensate(x, states.get(x.name, CPUState()), config) for x in inputs]
    return decisions, {d.name: d.state for d in decisions}
