"""From gateway metrics to the policies' ``PipelineObservation`` (pure).

Why the subtraction: stages call each other synchronously, so the gateway
latency of stage k contains stage k+1's whole call.  For means this is exact
(E[L_k] = E[own_k] + E[L_k+1], linearity); for p99 the difference is only a
heuristic (quantiles do not subtract), clamped at the stage's own compute
time.  ``QUART_LATENCY_STATISTIC=mean`` uses the exact form.

Why the memory: a stage's service time is a property of the stage, not of
the load; when a window has no requests the last measured value stands in,
otherwise an idle pipeline would look like "missing data" forever and never
be scaled down.  A window that saw arrivals = 0 has latency 0, not unknown.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway_plugin.actuate import Pipeline
from gateway_plugin.metrics_in import FunctionMetrics
from gateway_plugin.policies.observation import PipelineObservation, StageObservation


@dataclass(frozen=True)
class ServiceMemory:
    mean_s: float
    cv: float | None


def _own(k: float | None, nxt: float | None, last: bool, floor: float | None) -> float | None:
    if k is None:
        return None
    if last or k == 0.0:  # the last stage's latency is its own; an idle stage's is 0
        return k
    if nxt is None:
        return None
    return max(k - nxt, floor or 0.0)


def build(pipeline: Pipeline, fm: Mapping[str, FunctionMetrics], now_s: float, slo_s: float,
          memory: dict[str, ServiceMemory]) -> PipelineObservation:
    """``memory`` is updated in place with every service time measured in this window."""
    ms = [fm.get(f.name) for f in pipeline.stages]
    for f, m in zip(pipeline.stages, ms, strict=True):
        if m is not None and m.compute_mean_s:
            memory[f.name] = ServiceMemory(m.compute_mean_s, m.compute_cv)
    n = len(pipeline.stages)

    def lat(i: int, attr: str) -> float | None:
        m = ms[i]
        if m is None:
            return None
        v = getattr(m, attr)
        if v is None and m.arrival_rate == 0.0:
            return 0.0  # nothing arrived: no latency, which is not "unknown"
        return v

    stages = []
    for i, (f, m) in enumerate(zip(pipeline.stages, ms, strict=True)):
        svc = memory.get(f.name)
        last = i == n - 1
        nxt = None if last else ms[i + 1]
        floor = svc.mean_s if svc else None
        mean = _own(lat(i, "latency_mean_s"), None if last else lat(i + 1, "latency_mean_s"),
                    last, floor)
        p99 = _own(lat(i, "latency_p99_s"), None if last else lat(i + 1, "latency_p99_s"), last,
                   floor)
        if mean == 0.0 and m is not None and m.arrival_rate:
            mean = None  # arrivals but no completions yet: unknown, not zero
        stages.append(StageObservation(
            name=f.name, replicas=f.replicas,
            arrival_rate=m.arrival_rate if m else None,
            service_time_s=svc.mean_s if svc else None,
            service_cv=svc.cv if svc else None,
            latency_mean_s=mean, latency_p99_s=p99,
            queue_depth=m.queue_depth if m else None,
            arrival_cv=m.arrival_cv if m else None,
            departure_cv=nxt.arrival_cv if nxt else None,
            cpu_cores=f.cpu,
            # one torch thread per replica: a request keeps one core busy for its compute
            cpu_s_per_request=svc.mean_s if svc else None))
    return PipelineObservation(pipeline.name, pipeline.slo_s or slo_s, now_s, tuple(stages))
