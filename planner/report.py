"""What the planner tells its user: the seed's console report and ``static_execution_log.json``.

The console text keeps the seed's headings and wording ("EXECUTION METRICS",
"Server efficiency: 85.3%", "GPU 0 (Server 0): ...") because users grep for
them; it is plain ``print`` output so that it can be piped and diffed.  The log
JSON keeps the seed's four top-level keys -- ``summary``, ``gpu_assignments``,
``server_assignments``, ``executions`` -- with the seed's field names, and adds
``analysis`` (phase 1) and ``plan`` (strategy, replica targets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .analysis import Analysis
from .assign import Plan
from .metrics import Metrics
from .simulate import SimResult
from .workload import Workload

__all__ = ["comparison_lines", "execution_log", "metrics_lines", "plan_lines"]

RULE = "=" * 60


def plan_lines(analysis: Analysis, plan: Plan, top: int = 10) -> list[str]:
    """Phases 1-3 as text: usage, co-occurrence, workflow frequency, GPU and server map."""
    out = [RULE, "WORKFLOW PATTERN ANALYSIS", RULE, "Model usage (node executions):"]
    for m, n in sorted(analysis.model_usage.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"  {m}: {n}")
    pairs = sorted(analysis.cooccurrence.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    out.append("Model co-occurrence (requests using both):")
    out += [f"  ({a}, {b}): {n}" for (a, b), n in pairs] or ["  (none)"]
    out.append("Workflow frequency:")
    for w, n in sorted(analysis.workflow_frequency.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"  {w}: {n}")
    out += ["", RULE, f"STATIC MODEL ASSIGNMENT ({plan.strategy})", RULE]
    for s in range(plan.server_count):
        gpus = plan.server_gpus(s)
        out.append(f"Server {s} (GPUs {gpus[0]}-{gpus[-1]}):")
        for inst in sorted((i for i in plan.instances if i.server == s), key=lambda i: i.gpus):
            span = (
                f"GPU {inst.gpus[0]}"
                if len(inst.gpus) == 1
                else f"GPU {inst.gpus[0]}-{inst.gpus[-1]}"
            )
            out.append(f"  {span}: {inst.model}")
        used = {g for i in plan.instances if i.server == s for g in i.gpus}
        for g in gpus:
            if g not in used:
                out.append(f"  GPU {g}: (idle: no model fits)")
    if plan.dropped:
        out.append(f"Replicas that found no room (GPUs refilled): {', '.join(plan.dropped)}")
    return out


def metrics_lines(m: Metrics, result: SimResult, plan: Plan) -> list[str]:
    """The seed's EXECUTION METRICS block."""
    out = [RULE, "EXECUTION METRICS", RULE]
    out.append(f"Total execution time (makespan): {m.makespan_s:.2f} seconds")
    out.append(
        f"Throughput: {m.throughput_tasks_per_s:.3f} tasks/second "
        f"({m.throughput_requests_per_s:.3f} requests/second)"
    )
    out += [
        "",
        "Static deployment metrics:",
        f"  Server efficiency: {m.server_efficiency_pct:.1f}%",
        f"  Intra-server workflows: {m.intra_server_workflows}",
        f"  Inter-server workflows: {m.inter_server_workflows}",
        f"  Cross-server communications: {m.cross_server_communications}",
    ]
    out += [
        "",
        "Request completion times:",
        f"  Average: {m.latency_avg_s:.2f}s",
        f"  Median: {m.latency_median_s:.2f}s",
        f"  P99: {m.latency_p99_s:.2f}s",
        f"  Min: {m.latency_min_s:.2f}s",
        f"  Max: {m.latency_max_s:.2f}s",
    ]
    out += ["", "GPU utilization:"]
    for g in range(plan.gpu_count):
        models = set(plan.gpu_models(g))
        shown = "{" + ", ".join(repr(x) for x in sorted(models)) + "}" if models else "set()"
        out.append(
            f"  GPU {g} (Server {plan.server_of_gpu(g)}): {result.gpu_executions[g]} executions, "
            f"{result.gpu_busy_s[g]:.2f}s busy time ({m.gpu_utilization_pct[g]:.1f}% utilization), "
            f"Models: {shown}"
        )
    out += [
        "",
        "Overall GPU statistics:",
        f"  Average utilization: {m.gpu_utilization_avg_pct:.1f}%",
        f"  Utilization variance: {m.gpu_utilization_variance:.1f}",
    ]
    out += [
        "",
        "Model switching:",
        f"  Total switches: {m.model_switches}",
        f"  Total switch time: {m.switch_time_s:.2f} seconds",
        f"  Switch overhead: {m.switch_overhead_pct:.1f}%",
    ]
    return out


_COLUMNS: list[tuple[str, str, Callable[[Metrics], float]]] = [
    ("SE %", "{:>7.1f}", lambda m: m.server_efficiency_pct),
    ("CSC", "{:>7.0f}", lambda m: m.cross_server_communications),
    ("util var", "{:>9.1f}", lambda m: m.gpu_utilization_variance),
    ("makespan s", "{:>11.2f}", lambda m: m.makespan_s),
    ("tasks/s", "{:>8.3f}", lambda m: m.throughput_tasks_per_s),
    ("lat avg s", "{:>10.2f}", lambda m: m.latency_avg_s),
    ("lat p50 s", "{:>10.2f}", lambda m: m.latency_median_s),
    ("lat p99 s", "{:>10.2f}", lambda m: m.latency_p99_s),
    ("switches", "{:>9.0f}", lambda m: m.model_switches),
]


_RATIOS: list[tuple[str, Callable[[Metrics], float]]] = [
    ("CSC", lambda m: m.cross_server_communications),
    ("makespan", lambda m: m.makespan_s),
    ("lat avg", lambda m: m.latency_avg_s),
    ("lat p99", lambda m: m.latency_p99_s),
]


def comparison_lines(results: dict[str, Metrics], workload: Workload) -> list[str]:
    """One row per strategy (same workload, same seed), then GSwarm's ratios to each baseline."""
    out = [
        RULE,
        (
            f"ASSIGNMENT COMPARISON (same workload: {len(workload.jobs)} requests, "
            f"mode {workload.mode}, simulate {str(workload.simulate).lower()}, "
            f"seed {workload.seed})"
        ),
        RULE,
    ]
    widths = [len(fmt.format(0)) for _, fmt, _ in _COLUMNS]
    out.append(f"{'strategy':<12}" + "".join(f"{h:>{w}}" for (h, _, _), w in zip(_COLUMNS, widths)))
    for name, m in results.items():
        out.append(f"{name:<12}" + "".join(fmt.format(get(m)) for _, fmt, get in _COLUMNS))
    if "gswarm" in results:
        g = results["gswarm"]
        for name, b in results.items():
            if name == "gswarm":
                continue
            parts = []
            for label, get in _RATIOS:
                base = get(b)
                parts.append(
                    f"{label} x{get(g) / base:.2f}" if base else f"{label} n/a (baseline 0)"
                )
            se = g.server_efficiency_pct - b.server_efficiency_pct
            out.append(f"gswarm vs {name}: SE {se:+.1f} points, " + ", ".join(parts))
    return out


def execution_log(
    *,
    plan: Plan,
    metrics: Metrics,
    result: SimResult,
    analysis: Analysis,
    workload: Workload,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``static_execution_log.json`` content (seed structure plus ``analysis`` and ``plan``)."""
    summary = _summary(plan, metrics, workload)
    summary.update(extra_summary or {})
    gpu_assignments = {
        str(g): {
            "server_id": plan.server_of_gpu(g),
            "assigned_models": plan.gpu_models(g),
            "utilization": metrics.gpu_utilization_pct[g],
            "executions": result.gpu_executions[g],
            "busy_time": result.gpu_busy_s[g],
        }
        for g in range(plan.gpu_count)
    }
    server_assignments = {
        str(s): {"gpu_ids": plan.server_gpus(s), "models": sorted(plan.models_on(s))}
        for s in range(plan.server_count)
    }
    return {
        "summary": summary,
        "gpu_assignments": gpu_assignments,
        "server_assignments": server_assignments,
        "executions": [e.to_json() for e in result.executions],
        "analysis": analysis.to_json(),
        "plan": _plan_json(plan),
    }


def _summary(plan: Plan, metrics: Metrics, workload: Workload) -> dict[str, Any]:
    """The seed's ``summary`` section, with our assignment and seed."""
    return {
        "total_requests": metrics.total_requests,
        "completed_requests": metrics.completed_requests,
        "total_nodes_executed": metrics.total_nodes_executed,
        "mode": workload.mode,
        "simulate": workload.simulate,
        "gpus": list(range(plan.gpu_count)),
        "makespan": metrics.makespan_s,
        "throughput_tasks_per_second": metrics.throughput_tasks_per_s,
        "throughput_requests_per_second": metrics.throughput_requests_per_s,
        "total_model_switches": 0,
        "total_switch_time": 0,
        "avg_waiting_time": metrics.waiting_avg_s,
        "p99_waiting_time": metrics.waiting_p99_s,
        "avg_request_response_time": metrics.latency_avg_s,
        "median_request_response_time": metrics.latency_median_s,
        "p99_request_response_time": metrics.latency_p99_s,
        "min_request_response_time": metrics.latency_min_s,
        "max_request_response_time": metrics.latency_max_s,
        "server_efficiency": metrics.server_efficiency_pct,
        "intra_server_workflows": metrics.intra_server_workflows,
        "inter_server_workflows": metrics.inter_server_workflows,
        "cross_server_communications": metrics.cross_server_communications,
        "gpu_utilization_average": metrics.gpu_utilization_avg_pct,
        "gpu_utilization_variance": metrics.gpu_utilization_variance,
        "gpus_per_server": plan.gpus_per_server,
        "assignment": plan.strategy,
        "seed": workload.seed,
    }


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "strategy": plan.strategy,
        "variant": plan.variant or None,
        "replica_target": dict(plan.replica_target),
        "dropped_replicas": list(plan.dropped),
        "instances": [
            {"model": i.model, "server_id": i.server, "gpu_ids": list(i.gpus)}
            for i in plan.instances
        ],
    }
