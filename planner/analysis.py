"""Phase 1 of the planner: what the workload asks of each model, and which models go together.

Three views of the requests, as the seed describes them:

* **usage frequency** -- node executions per model (and the estimated seconds of
  work behind them, which sizes replica counts);
* **co-occurrence** -- per unordered model pair, the number of requests whose
  workflow uses both;
* **workflow frequency** -- requests per workflow (and the seconds of work each
  workflow brings to each of its models, which tells the assignment how much
  traffic a server takes on when it can complete a workflow).

We add **edge affinity**: per model pair, the number of workflow edges (data
hand-offs) between them over all requests.  An edge is what becomes a
cross-server communication when the two models sit on different servers, so
``affinity(a, b) = edge_affinity + cooccurrence`` is what the assignment
phase tries to keep inside one server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from .spec import SystemConfig
from .workload import Workload

__all__ = ["Analysis", "analyse", "pair"]


def pair(a: str, b: str) -> tuple[str, str]:
    """Canonical key of an unordered model pair."""
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class Analysis:
    model_usage: dict[str, int]
    model_work_s: dict[str, float]
    cooccurrence: dict[tuple[str, str], int]
    edge_affinity: dict[tuple[str, str], int]
    workflow_frequency: dict[str, int]
    workflow_models: dict[str, frozenset[str]]
    workflow_model_work_s: dict[str, dict[str, float]]

    def affinity(self, a: str, b: str) -> int:
        if a == b:
            return 0
        key = pair(a, b)
        return self.cooccurrence.get(key, 0) + self.edge_affinity.get(key, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "model_usage": dict(self.model_usage),
            "model_work_s": {m: round(w, 6) for m, w in self.model_work_s.items()},
            "model_cooccurrence": [
                {"models": list(k), "requests": v} for k, v in sorted(self.cooccurrence.items())
            ],
            "edge_affinity": [
                {"models": list(k), "edges": v} for k, v in sorted(self.edge_affinity.items())
            ],
            "workflow_frequency": dict(self.workflow_frequency),
        }


def analyse(config: SystemConfig, workload: Workload) -> Analysis:
    """Count usage, work, co-occurrence, edge affinity and workflow frequency."""
    usage: Counter[str] = Counter({m: 0 for m in config.planned_models})
    work: dict[str, float] = {m: 0.0 for m in config.planned_models}
    wf_freq: Counter[str] = Counter({w: 0 for w in config.workflows})
    wf_work: dict[str, dict[str, float]] = {
        w: {m: 0.0 for m in sorted(wf.models)} for w, wf in config.workflows.items()
    }
    for job in workload.jobs:
        wf_freq[job.workflow_id] += 1
        for node in config.workflows[job.workflow_id].nodes:
            usage[node.model] += 1
            work[node.model] += job.estimate_s[node.node_id]
            wf_work[job.workflow_id][node.model] += job.estimate_s[node.node_id]
    co: Counter[tuple[str, str]] = Counter()
    edges: Counter[tuple[str, str]] = Counter()
    for wf_id, count in wf_freq.items():
        if not count:
            continue
        wf = config.workflows[wf_id]
        for a, b in combinations(sorted(wf.models), 2):
            co[(a, b)] += count
        model_of = {n.node_id: n.model for n in wf.nodes}
        for src, dst in wf.edges:
            if model_of[src] != model_of[dst]:
                edges[pair(model_of[src], model_of[dst])] += count
    return Analysis(
        model_usage=dict(usage),
        model_work_s=work,
        cooccurrence=dict(co),
        edge_affinity=dict(edges),
        workflow_frequency=dict(wf_freq),
        workflow_models={w: wf.models for w, wf in config.workflows.items()},
        workflow_model_work_s=wf_work,
    )
