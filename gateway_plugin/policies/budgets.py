"""Where a pipeline's SLO goes: each stage's latency budget, and the critical stages.

The replica corrector holds every stage to its budget (its share of the
pipeline SLO) and treats the stages using most of their share as critical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .observation import PipelineObservation, topological_order

__all__ = ["critical_stages", "split_slo", "stage_budgets"]

_EPS = 1e-9


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


def stage_budgets(obs: PipelineObservation) -> list[float]:
    """``split_slo`` of a pipeline's SLO over its stages, by their observed service times."""
    times = [s.service_time_s for s in obs.stages]
    known = [t for t in times if t is not None]
    # A stage without a service-time sample gets the mean of the others: the
    # split only needs weights, and equal weights are the honest default.
    fill = sum(known) / len(known) if known else 1.0
    edges = None if obs.edges is None else obs.edge_indices()
    return split_slo([fill if t is None else t for t in times], obs.slo_s, edges)
