"""GSwarm's final step: simulate a few candidate plans on the workload and keep the best.

Why search at all: every single greedy rule we tried fails on some realistic
shape.  Pure affinity puts every bundle on one server behind one replica of
a shared model (16 GPUs in servers of 8, our example: 100 % server efficiency,
latency x10); strict replica counts split a fork-and-merge workflow around a
2-GPU model (servers of 4: locality lost for the heaviest workflow); holding
GPUs back for bundle copies starves the bottleneck model.  A static plan is
computed once per deployment, and one simulation of a few hundred requests
takes a fraction of a second, so we let the workload decide between the
variants (:class:`~.assign.GSwarmVariant`) instead of hard-coding one.

Choice: among the candidates whose makespan *and* mean request latency are
both within ``tolerance`` (5 %) of the best values seen, the highest server
efficiency, then the fewest cross-server communications, then the best
performance, then the earlier variant in ``VARIANTS``.  Should no candidate
be near the best on both, only the mode's own measure counts: the makespan
offline (a batch is done when its last request is), the mean request
latency online.  Identical plans are simulated once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import Analysis
from .assign import GSwarmVariant, Plan, make_plan
from .metrics import Metrics, summarise
from .simulate import SimResult, simulate
from .spec import SystemConfig
from .workload import Workload

__all__ = ["VARIANTS", "Candidate", "choose_gswarm"]

VARIANTS: tuple[GSwarmVariant, ...] = tuple(
    GSwarmVariant(order, crowding, share)
    for share in (0.5, 0.0, 1.0)
    for crowding in (1.5, float("inf"))
    for order in ("frequency", "work")
)


@dataclass(frozen=True)
class Candidate:
    variant: GSwarmVariant
    plan: Plan
    metrics: Metrics
    same_as: str = ""  # label of an earlier candidate with the identical plan

    def to_json(self) -> dict[str, object]:
        m = self.metrics
        return {
            "variant": self.variant.label,
            "same_plan_as": self.same_as or None,
            "server_efficiency": m.server_efficiency_pct,
            "cross_server_communications": m.cross_server_communications,
            "avg_request_response_time": m.latency_avg_s,
            "p99_request_response_time": m.latency_p99_s,
            "makespan": m.makespan_s,
        }


def choose_gswarm(
    config: SystemConfig,
    analysis: Analysis,
    workload: Workload,
    gpu_count: int,
    gpus_per_server: int,
    *,
    spill_factor: float = 2.0,
    tolerance: float = 0.05,
    variants: tuple[GSwarmVariant, ...] = VARIANTS,
) -> tuple[Plan, list[Candidate]]:
    """The chosen GSwarm plan and every candidate tried (see the module docstring)."""
    seen: dict[tuple[object, ...], Candidate] = {}
    cands: list[Candidate] = []
    for v in variants:
        plan = make_plan(config, analysis, gpu_count, gpus_per_server, "gswarm", variant=v)
        key = tuple(sorted((i.model, i.gpus) for i in plan.instances))
        if key in seen:
            first = seen[key]
            cands.append(Candidate(v, plan, first.metrics, first.variant.label))
            continue
        result: SimResult = simulate(config, plan, workload, spill_factor=spill_factor)
        cand = Candidate(v, plan, summarise(result))
        seen[key] = cand
        cands.append(cand)

    def perf(c: Candidate) -> float:
        return c.metrics.makespan_s if workload.mode == "offline" else c.metrics.latency_avg_s

    def near(value: float, best: float) -> bool:
        return value <= best * (1 + tolerance) + 1e-9

    best_makespan = min(c.metrics.makespan_s for c in cands)
    best_latency = min(c.metrics.latency_avg_s for c in cands)
    best_perf = min(perf(c) for c in cands)
    eligible = [
        c
        for c in cands
        if near(c.metrics.makespan_s, best_makespan) and near(c.metrics.latency_avg_s, best_latency)
    ] or [c for c in cands if near(perf(c), best_perf)]
    chosen = min(
        eligible,
        key=lambda c: (
            -round(c.metrics.server_efficiency_pct, 6),
            c.metrics.cross_server_communications,
            perf(c),
            cands.index(c),
        ),
    )
    return chosen.plan, cands
