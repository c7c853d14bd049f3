"""The seed's metrics, computed from a simulation result (pure functions, no I/O).

* **Server efficiency** ``SE = intra-server workflows / completed workflows x 100 %``:
  a workflow is intra-server when every one of its nodes ran on one server.
* **Cross-server communications** ``CSC``: workflow edges (one per request) whose
  two nodes ran on different servers.
* **GPU utilisation** ``busy_s / makespan x 100 %`` per GPU, and its variance
  ``Var(GPU_utilizations)`` (population variance, %^2); lower is better balanced.
* **Makespan**: end of the last node, from time 0 (offline: every request arrives
  at 0; online: at its timestamp's offset from the first one).
* **Throughput**: node executions (tasks) per second of makespan; also requests/s.
* **Request latency**: completion - arrival; average, median, p99 (linear
  interpolation, numpy's default), min, max.
* **Model switches**: 0 -- a static plan never loads or swaps a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .simulate import SimResult

__all__ = ["Metrics", "summarise"]


@dataclass(frozen=True)
class Metrics:
    strategy: str
    total_requests: int
    completed_requests: int
    total_nodes_executed: int
    makespan_s: float
    throughput_tasks_per_s: float
    throughput_requests_per_s: float
    server_efficiency_pct: float
    intra_server_workflows: int
    inter_server_workflows: int
    cross_server_communications: int
    latency_avg_s: float
    latency_median_s: float
    latency_p99_s: float
    latency_min_s: float
    latency_max_s: float
    waiting_avg_s: float
    waiting_p99_s: float
    gpu_utilization_pct: tuple[float, ...]
    gpu_utilization_avg_pct: float
    gpu_utilization_variance: float
    model_switches: int = 0
    switch_time_s: float = 0.0
    switch_overhead_pct: float = 0.0

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["gpu_utilization_pct"] = list(self.gpu_utilization_pct)
        return out


def server_efficiency_pct(intra: int, inter: int) -> float:
    """SE = intra / (intra + inter) x 100 (0 when nothing completed)."""
    total = intra + inter
    return 100.0 * intra / total if total else 0.0


def _stats(values: list[float]) -> tuple[float, float, float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    arr = np.asarray(values, dtype=float)
    return (
        float(arr.mean()),
        float(np.median(arr)),
        float(np.percentile(arr, 99)),
        float(arr.min()),
        float(arr.max()),
    )


def summarise(result: SimResult) -> Metrics:
    """All metrics of one run of one plan."""
    execs = result.executions
    makespan = max((e.end_time for e in execs), default=0.0)
    latencies = [end - result.arrival_s[rid] for rid, end in result.completion_s.items()]
    avg, med, p99, lo, hi = _stats(latencies)
    waits = [e.waiting_time for e in execs]
    w_avg, _, w_p99, _, _ = _stats(waits)
    util = tuple(100.0 * b / makespan if makespan > 0 else 0.0 for b in result.gpu_busy_s)
    completed = len(result.completion_s)
    return Metrics(
        strategy=result.plan.strategy,
        total_requests=result.total_requests,
        completed_requests=completed,
        total_nodes_executed=len(execs),
        makespan_s=makespan,
        throughput_tasks_per_s=len(execs) / makespan if makespan > 0 else 0.0,
        throughput_requests_per_s=completed / makespan if makespan > 0 else 0.0,
        server_efficiency_pct=server_efficiency_pct(
            result.intra_server_workflows, result.inter_server_workflows
        ),
        intra_server_workflows=result.intra_server_workflows,
        inter_server_workflows=result.inter_server_workflows,
        cross_server_communications=result.cross_server_communications,
        latency_avg_s=avg,
        latency_median_s=med,
        latency_p99_s=p99,
        latency_min_s=lo,
        latency_max_s=hi,
        waiting_avg_s=w_avg,
        waiting_p99_s=w_p99,
        gpu_utilization_pct=util,
        gpu_utilization_avg_pct=float(np.mean(util)) if util else 0.0,
        gpu_utilization_variance=float(np.var(util)) if util else 0.0,
    )
