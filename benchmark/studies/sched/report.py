"""Seed 003's console comparison: Metric, Centralized, Gossip, Winner.

The seed's rows, in its order and units (TTFT in ms, memory utilisation and
success rate in %), then what its "Future Enhancements" asked for: latency,
SLO attainment, the SERVE / COLD_START / MIGRATE counts and the recovery time
after a node failure.  Higher wins for success, memory utilisation (the seed
counts a better-used cluster as the winner) and SLO attainment; lower wins for
times and queue depth.  Action counts describe behaviour, they do not win.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ROWS", "comparison_rows", "format_table"]

# (label, summary column, scale, format, better: "high" | "low" | None)
ROWS: list[tuple[str, str, float, str, str | None]] = [
    ("Success Rate (%)", "success_rate", 100.0, "{:.1f}%", "high"),
    ("Avg TTFT (ms)", "avg_ttft", 1.0, "{:.2f}", "low"),
    ("P95 TTFT (ms)", "p95_ttft", 1.0, "{:.2f}", "low"),
    ("P99 TTFT (ms)", "p99_ttft", 1.0, "{:.2f}", "low"),
    ("Avg Memory Util", "avg_memory_utilization", 100.0, "{:.1f}%", "high"),
    ("P95 Memory Util", "p95_memory_utilization", 100.0, "{:.1f}%", "high"),
    ("Avg Queue Depth", "avg_queue_depth", 1.0, "{:.2f}", "low"),
    ("P95 Queue Depth", "p95_queue_depth", 1.0, "{:.2f}", "low"),
    ("Avg Latency (ms)", "avg_latency", 1.0, "{:.2f}", "low"),
    ("P99 Latency (ms)", "p99_latency", 1.0, "{:.2f}", "low"),
    ("SLO Attainment (%)", "slo_attainment", 100.0, "{:.1f}%", "high"),
    ("SERVE", "serve_count", 1.0, "{:.0f}", None),
    ("COLD_START", "cold_start_count", 1.0, "{:.0f}", None),
    ("MIGRATE", "migrate_count", 1.0, "{:.0f}", None),
    ("Recovery Time (s)", "avg_recovery_time", 1.0, "{:.1f}", "low"),
]


def _fmt(v: Any, fmt: str, scale: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "not recovered"
    return fmt.format(float(v) * scale)


def _winner(a: Any, b: Any, better: str | None) -> str:
    if better is None:
        return "-"
    fa = float(a) if a is not None else math.nan
    fb = float(b) if b is not None else math.nan
    if math.isnan(fa) or math.isnan(fb):
        return "-"
    if fa == fb:
        return "Tie"
    a_wins = fa > fb if better == "high" else fa < fb
    return "Centralized" if a_wins else "Gossip"


def comparison_rows(central: Mapping[str, Any], gossip: Mapping[str, Any]
                    ) -> list[tuple[str, str, str, str]]:
    """(metric, centralized, gossip, winner) per row, from two ``summarize`` rows."""
    return [(label, _fmt(central.get(col), fmt, scale), _fmt(gossip.get(col), fmt, scale),
             _winner(central.get(col), gossip.get(col), better))
            for label, col, scale, fmt, better in ROWS]


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    bar = "=" * 100
    lines = [bar, "COMPARISON REPORT: CENTRALIZED VS GOSSIP", bar, "",
             f"{'Metric':<40} {'Centralized':<20} {'Gossip':<20} {'Winner'}", "-" * 100]
    lines += [f"{m:<40} {c:<20} {g:<20} {w}" for m, c, g, w in rows]
    lines.append(bar)
    return "\n".join(lines)
