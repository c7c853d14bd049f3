"""What one system's run produced, in the same shape for the simulator and live.

Per-request arrays keep every latency (percentiles are computed once, at the
end, never averaged from per-window percentiles); the timeline keeps one row
per stage per control period, which is what the replicas-over-time plot and
the replica-seconds (cost) figure are made from.  ``summarize`` turns a run
into the seed-003 CSV columns plus ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RunResult", "TimelineRow", "summarize", "SUMMARY_COLUMNS"]


@dataclass(frozen=True)
class TimelineRow:
    """One stage at one control period (``t_s`` on the run's clock, 0 = first arrival)."""

    t_s: float
    stage: str
    replicas: int            # replicas ready to serve
    desired: int             # what the system asked for
    queue_depth: float = 0.0
    in_flight: float = 0.0
    cpu: float | None = None
    memory_util: float | None = None  # node memory in use / capacity, 0..1


@dataclass
class RunResult:
    """One system on one workload.

    ``latency_s`` and ``ttft_s`` are NaN for failed requests; for an encoder
    pipeline (one response per request) TTFT is the full latency.
    """

    system: str
    mode: str                       # "sim" or "live"
    workload: dict[str, Any]        # name, sha256, seed, rps, cv, duration_s, ...
    slo_s: float
    arrival_s: np.ndarray
    latency_s: np.ndarray
    ok: np.ndarray
    ttft_s: np.ndarray | None = None
    timeline: list[TimelineRow] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)  # serve / cold_start / migrate
    recovery_s: list[float] = field(default_factory=list)
    start_time: str = ""
    end_time: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        self.arrival_s = np.asarray(self.arrival_s, dtype=float)
        self.latency_s = np.asarray(self.latency_s, dtype=float)
        self.ok = np.asarray(self.ok, dtype=bool)
        if self.ttft_s is None:
            self.ttft_s = self.latency_s
        self.ttft_s = np.asarray(self.ttft_s, dtype=float)
        if not (len(self.latency_s) == len(self.ok) == len(self.ttft_s) == n):
            raise ValueError("arrival_s, latency_s, ok and ttft_s must have the same length")

    def replica_seconds(self) -> float:
        """Integral of ready replicas over time, summed over stages (the cost)."""
        by_stage: dict[str, list[TimelineRow]] = {}
        for row in self.timeline:
            by_stage.setdefault(row.stage, []).append(row)
        total = 0.0
        for rows in by_stage.values():
            rows.sort(key=lambda r: r.t_s)
            for a, b in zip(rows, rows[1:]):
                total += a.replicas * (b.t_s - a.t_s)
        return total


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _stats(prefix: str, values: Sequence[float | None], scale: float = 1.0) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float) * scale
    return {
        f"avg_{prefix}": float(v.mean()) if len(v) else math.nan,
        f"min_{prefix}": float(v.min()) if len(v) else math.nan,
        f"max_{prefix}": float(v.max()) if len(v) else math.nan,
        f"p50_{prefix}": _pct(v, 50),
        f"p95_{prefix}": _pct(v, 95),
    }


SUMMARY_COLUMNS = [
    # seed 003's columns, in its order
    "experiment_name", "scheduler_type", "start_time", "end_time", "duration",
    "total_requests", "successful_requests", "failed_requests",
    "avg_ttft", "p50_ttft", "p95_ttft", "p99_ttft",
    "avg_latency", "p50_latency", "p95_latency", "p99_latency",
    "avg_memory_utilization", "min_memory_utilization", "max_memory_utilization",
    "p50_memory_utilization", "p95_memory_utilization",
    "avg_queue_depth", "min_queue_depth", "max_queue_depth", "p50_queue_depth",
    "p95_queue_depth",
    "avg_recovery_time",
    "serve_count", "cold_start_count", "migrate_count",
    # ours
    "mode", "workload_sha256", "success_rate", "slo_s", "slo_attainment",
    "replica_seconds",
]


def summarize(result: RunResult, experiment_name: str = "") -> dict[str, Any]:
    """Seed-003 columns (times in ms, utilisation as a fraction) plus cost and SLO."""
    ok = result.ok
    assert result.ttft_s is not None  # __post_init__ fills it
    lat = result.latency_s[ok] * 1000.0
    ttft = result.ttft_s[ok] * 1000.0
    n = len(ok)
    good = int(ok.sum())
    within = int((ok & (result.latency_s <= result.slo_s)).sum())
    duration = float(result.workload.get("duration_s", 0.0)) or (
        float(result.arrival_s.max() - result.arrival_s.min()) if n else 0.0
    )
    row: dict[str, Any] = {
        "experiment_name": experiment_name or str(result.workload.get("name", "")),
        "scheduler_type": result.system,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "duration": duration,
        "total_requests": n,
        "successful_requests": good,
        "failed_requests": n - good,
        "avg_ttft": float(ttft.mean()) if len(ttft) else math.nan,
        "p50_ttft": _pct(ttft, 50), "p95_ttft": _pct(ttft, 95), "p99_ttft": _pct(ttft, 99),
        "avg_latency": float(lat.mean()) if len(lat) else math.nan,
        "p50_latency": _pct(lat, 50), "p95_latency": _pct(lat, 95), "p99_latency": _pct(lat, 99),
    }
    row.update(_stats("memory_utilization", [r.memory_util for r in result.timeline]))
    row.update(_stats("queue_depth", [r.queue_depth for r in result.timeline]))
    row["avg_recovery_time"] = (
        float(np.mean(result.recovery_s)) if result.recovery_s else math.nan
    )
    row["serve_count"] = int(result.actions.get("serve", 0))
    row["cold_start_count"] = int(result.actions.get("cold_start", 0))
    row["migrate_count"] = int(result.actions.get("migrate", 0))
    row["mode"] = result.mode
    row["workload_sha256"] = str(result.workload.get("sha256", ""))
    row["success_rate"] = good / n if n else math.nan
    row["slo_s"] = result.slo_s
    row["slo_attainment"] = within / n if n else math.nan
    row["replica_seconds"] = result.replica_seconds()
    return {k: row[k] for k in SUMMARY_COLUMNS}
