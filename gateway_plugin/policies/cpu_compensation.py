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

__all__ = [
    "CPUConfig",
    "CPUDecision",
    "CPUInput",
    "CPUState",
    "compensate",
    "compensate_pipeline",
    "cpu_demand",
]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class CPUState:
    cpu: float | None = None
    baseline: float | None = None
    active: bool = False
    last_step: float = 0.0
    latency_before: float | None = None
    plateau_demand: float | None = None


@dataclass(slots=True)
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


@dataclass(slots=True)
class CPUDecision:
    name: str
    cpu: float
    demand: float | None
    reason: str
    state: CPUState


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


def compensate(x: CPUInput, state: CPUState, config: CPUConfig) -> CPUDecision:
    """One period of Algorithm 2 for one stage."""
    cpu = state.cpu if state.cpu is not None else x.cpu_cores
    if cpu is None:
        cpu = config.min_cpu
    demand: float | None = None
    if x.arrival_rate is not None and x.cpu_s_per_request is not None and x.replicas_after >= 1:
        demand = cpu_demand(
            x.arrival_rate,
            x.cpu_s_per_request,
            x.replicas_after,
            config,
            x.arrival_cv,
            x.service_cv,
        )
    consolidated = 0 < x.replicas_after < x.replicas_before
    if not (state.active or consolidated):
        # the common case, kept cheap: a thousand stages go through here each period
        kept = state if state.cpu == cpu else CPUState(cpu=cpu)
        return CPUDecision(x.name, cpu, demand, f"cpu {cpu:.2f}: no consolidation, unchanged", kept)
    here = replace(state, cpu=cpu)

    def out(new_cpu: float, why: str, **changes: Any) -> CPUDecision:
        return CPUDecision(x.name, new_cpu, demand, why, replace(here, cpu=new_cpu, **changes))

    if demand is None or x.latency_s is None:
        return out(cpu, f"cpu {cpu:.2f}: missing rate/CPU time/latency, hold")
    d_note = f"demand {demand:.2f}"
    baseline = state.baseline if state.active and state.baseline is not None else cpu
    if consolidated and not state.active:
        here = replace(here, active=True, baseline=baseline, plateau_demand=None)

    if state.last_step > 0 and state.latency_before is not None:
        if x.latency_s >= state.latency_before * (1.0 - config.improve_tolerance):
            back = max(cpu - state.last_step, baseline)
            why = (
                f"cpu {cpu:.2f}->{back:.2f}: rollback, latency {x.latency_s * 1e3:.1f} ms did not "
                f"improve on {state.latency_before * 1e3:.1f} ms ({d_note})"
            )
            return out(back, why, last_step=0.0, latency_before=None, plateau_demand=demand)
        here = replace(here, last_step=0.0, latency_before=None)

    if demand < cpu * (1.0 - config.improve_tolerance):
        back = max(demand, baseline)
        ends = back <= baseline + 1e-9
        why = f"cpu {cpu:.2f}->{back:.2f}: give back, {d_note}" + (" (baseline)" if ends else "")
        return out(back, why, active=not ends, last_step=0.0, latency_before=None)

    plateau = here.plateau_demand
    if plateau is not None and demand <= plateau * (1.0 + config.improve_tolerance):
        return out(cpu, f"cpu {cpu:.2f}: plateau after rollback ({d_note})")
    if demand > cpu + 1e-9 and cpu < config.max_cpu:
        step = max(config.increment_ratio * (demand - cpu), config.min_step)
        new = min(cpu + step, demand, config.max_cpu)
        why = f"cpu {cpu:.2f}->{new:.2f}: step {new - cpu:.2f} towards {d_note}"
        if consolidated:
            why += f" (consolidated {x.replicas_before}->{x.replicas_after})"
        return out(new, why, last_step=new - cpu, latency_before=x.latency_s, plateau_demand=None)
    return out(cpu, f"cpu {cpu:.2f}: meets {d_note}")


def compensate_pipeline(
    inputs: Sequence[CPUInput], states: Mapping[str, CPUState], config: CPUConfig
) -> tuple[list[CPUDecision], dict[str, CPUState]]:
    decisions = [compensate(x, states.get(x.name, CPUState()), config) for x in inputs]
    return decisions, {d.name: d.state for d in decisions}
