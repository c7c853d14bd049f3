"""Static provisioning: replicas fixed once, from a plan or from queueing theory.

What an operator without an autoscaler does: size each function once and
leave it.  Two ways to size, in order:

1. **A GSwarm plan** (the placement issue's static planner,
   ``planner``, ``quart-faas plan --stack stack.yml``): each
   stage gets as many replicas as the plan has instances of it.  ``plan`` may
   be a :class:`planner.Plan`, the ``static_execution_log.json``
   that ``quart-faas plan`` writes (its ``plan.instances``), or a mapping
   ``stage -> replicas``.  A stage the plan does not cover is a harness error.
2. **M/M/c at the workload's mean rate** (``gateway_plugin.policies.mmc``,
   Eq. 1): the fewest replicas whose Erlang-C delay meets the stage's share
   of the pipeline SLO (``split_slo``, proportional to service time, as the
   Quart corrector splits it).  ``mean_rps`` is the workload's mean arrival
   rate (one number: every request visits every stage of a chain; or per
   stage).  Service times come from ``service_time_s`` or the first
   observation that has them.  Without ``mean_rps`` the first observed
   arrival rate stands in for it.  The count is computed once and frozen.

Until a stage can be sized (no rate or service time seen yet), its current
count is held.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_plugin.policies.budgets import split_slo
from gateway_plugin.policies.mmc import min_replicas_for
from gateway_plugin.policies.observation import PipelineObservation

from .base import Bounds, Target, Tick
from .common import check_positive, per_stage, stages

__all__ = ["Static", "StaticState", "load_plan"]


def load_plan(plan: Any) -> dict[str, int]:
    """Replicas per stage from a Plan, a planner execution log (path or dict), or a mapping."""
    if isinstance(plan, (str, Path)):
        path = Path(plan)
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read plan {path}: {exc}") from None
    instances = getattr(plan, "instances", None)
    if instances is not None:  # a planner.Plan
        return dict(Counter(i.model for i in instances))
    if not isinstance(plan, Mapping):
        raise TypeError(f"plan must be a Plan, a planner log or a mapping, got {type(plan)}")
    inner = plan.get("plan")
    if isinstance(inner, Mapping):  # static_execution_log.json
        if inner.get("instances"):
            return dict(Counter(str(i["model"]) for i in inner["instances"]))
        if isinstance(inner.get("replica_target"), Mapping):
            plan = inner["replica_target"]
        else:
            raise ValueError(  # noqa: TRY004 - a malformed file, not a wrong type
                "planner log has neither plan.instances nor plan.replica_target"
            )
    out: dict[str, int] = {}
    for stage, n in plan.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"plan: replicas of {stage!r} must be an int >= 0, got {n!r}")
        out[str(stage)] = n
    if not out:
        raise ValueError("plan has no stages")
    return out


@dataclass(frozen=True)
class StaticState:
    replicas: Mapping[str, int] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)


class Static:
    scaleup = "cold"

    def __init__(
        self,
        bounds: Bounds,
        *,
        name: str = "static",
        plan: Any = None,
        mean_rps: float | Mapping[str, float] | None = None,
        service_time_s: float | Mapping[str, float] | None = None,
        period_s: float = 5.0,
    ) -> None:
        check_positive("mean_rps", mean_rps, allow_zero=True)
        check_positive("service_time_s", service_time_s)
        check_positive("period_s", period_s)
        self.name = name
        self.bounds = bounds
        self.period_s = float(period_s)
        self.plan = None if plan is None else load_plan(plan)
        self.mean_rps = mean_rps
        self.service_time_s = service_time_s

    def initial_state(self) -> StaticState:
        return StaticState()

    def _size(self, p: PipelineObservation) -> dict[str, tuple[int, str]]:
        """M/M/c counts for every stage of a pipeline, or {} if it cannot be sized yet."""
        times, rates = [], []
        for s in p.stages:
            t = per_stage(self.service_time_s, s.name, s.service_time_s)
            lam = per_stage(self.mean_rps, s.name, s.arrival_rate)
            if t is None or lam is None:
                return {}
            times.append(t)
            rates.append(lam)
        edges = None if p.edges is None else p.edge_indices()
        budgets = split_slo(times, p.slo_s, edges)
        out = {}
        hi = self.bounds.max_replicas
        for s, t, lam, budget in zip(p.stages, times, rates, budgets, strict=True):
            n = min_replicas_for(lam, 1.0 / t, budget, hi)
            if n is None:
                out[s.name] = (hi, f"M/M/c cannot meet {budget * 1e3:.1f} ms at {lam:.3g} rps")
            else:
                why = f"M/M/c: {n} for {budget * 1e3:.1f} ms at {lam:.3g} rps, {t * 1e3:.1f} ms"
                out[s.name] = (n, why)
        return out

    def decide(self, tick: Tick, state: StaticState) -> tuple[dict[str, Target], StaticState]:
        replicas = dict(state.replicas)
        reasons = dict(state.reasons)
        if self.plan is not None:
            missing = [s.name for _, s in stages(tick) if s.name not in self.plan]
            if missing:
                raise ValueError(
                    f"static plan has no replica count for {', '.join(missing)} "
                    f"(it covers {', '.join(sorted(self.plan))})"
                )
        for p in tick.pipelines:
            if all(s.name in replicas for s in p.stages):
                continue
            if self.plan is not None:
                sized = {s.name: (self.plan[s.name], "GSwarm plan") for s in p.stages}
            else:
                sized = self._size(p)
            for name, (n, why) in sized.items():
                replicas.setdefault(name, self.bounds.clamp(n))
                reasons.setdefault(name, why)
        out = {}
        for _, s in stages(tick):
            fixed = replicas.get(s.name)
            if fixed is None:
                out[s.name] = Target(self.bounds.clamp(s.replicas), None, "not sized yet: hold")
            else:
                out[s.name] = Target(fixed, None, f"static: {reasons[s.name]}")
        return out, StaticState(replicas, reasons)


def build(bounds: Bounds, **options: Any) -> Static:
    return Static(bounds, **options)
