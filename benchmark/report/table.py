"""The comparison table of seed 003, for any number of systems.

``Metric | <system 1> | ... | <system N> | Winner``: one function
(:func:`comparison_rows`) decides every cell and every winner, and two thin
renderers draw the same rows, one with ``rich`` for the console and one as
plain fixed-width text for files and CI logs, so the two can never disagree.

Winners are decided on the values *as displayed* (rounded to the row's
precision): a table that shows ``125.45`` twice and names one of them the
winner would mislead its reader, so equal displayed values are a ``tie``.
A system whose value is undefined (NaN: no successful request, no recovery
measured) does not compete on that row; when no system has a value the
winner is ``—``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich import box
from rich.table import Table
from rich.text import Text

__all__ = [
    "METRICS",
    "Metric",
    "TableRow",
    "comparison_rows",
    "pick_winner",
    "render_plain",
    "render_rich",
    "report_title",
]

TIE = "tie"
UNDEFINED = "—"


@dataclass(frozen=True)
class Metric:
    """One row: which summary column, which way is better, how it is shown.

    ``scale`` converts the summary's unit into the displayed one (fractions
    to percent); ``decimals`` is the displayed precision, which is also the
    precision winners are decided at.
    """

    label: str
    key: str
    better: Literal["higher", "lower"]
    decimals: int = 2
    scale: float = 1.0
    suffix: str = ""


# Directions: more success / SLO attainment / warm serves is better; less
# latency, cost, queueing, cold starts, migrations and recovery time is
# better.  Memory utilisation follows seed 003's example report, where the
# higher average and P95 utilisation wins (memory held by models that are
# serving, rather than idle capacity); its cost side is the replica-seconds row.
METRICS: tuple[Metric, ...] = (
    Metric("Success Rate (%)", "success_rate", "higher", 2, 100.0, "%"),
    Metric("Avg TTFT (ms)", "avg_ttft", "lower"),
    Metric("P50 TTFT (ms)", "p50_ttft", "lower"),
    Metric("P95 TTFT (ms)", "p95_ttft", "lower"),
    Metric("P99 TTFT (ms)", "p99_ttft", "lower"),
    Metric("Avg Latency (ms)", "avg_latency", "lower"),
    Metric("P50 Latency (ms)", "p50_latency", "lower"),
    Metric("P95 Latency (ms)", "p95_latency", "lower"),
    Metric("P99 Latency (ms)", "p99_latency", "lower"),
    Metric("SLO attainment (%)", "slo_attainment", "higher", 2, 100.0, "%"),
    Metric("Replica-seconds", "replica_seconds", "lower", 1),
    Metric("Avg Memory Util", "avg_memory_utilization", "higher", 1, 100.0, "%"),
    Metric("P95 Memory Util", "p95_memory_utilization", "higher", 1, 100.0, "%"),
    Metric("Avg Queue Depth", "avg_queue_depth", "lower"),
    Metric("P95 Queue Depth", "p95_queue_depth", "lower"),
    Metric("SERVE count", "serve_count", "higher", 0),
    Metric("COLD_START count", "cold_start_count", "lower", 0),
    Metric("MIGRATE count", "migrate_count", "lower", 0),
    Metric("Avg Recovery Time (s)", "avg_recovery_time", "lower"),
)


@dataclass(frozen=True)
class TableRow:
    """A rendered row: the label, one cell per system, the winner's name (or tie/—)."""

    label: str
    key: str
    cells: tuple[str, ...]
    values: tuple[float, ...]  # displayed-precision values, NaN where undefined
    winner: str


def _number(value: Any) -> float:
    """A summary value as a float; None, '' and non-numbers are undefined (NaN)."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def pick_winner(
    systems: Sequence[str], values: Sequence[float], better: Literal["higher", "lower"]
) -> str:
    """The system with the best value, ``tie`` when the best is shared, ``—`` if none is defined.

    ``values`` are compared exactly, so round them first (see module docstring).
    """
    if len(systems) != len(values):
        raise ValueError(f"{len(systems)} systems but {len(values)} values")
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    finite = [(s, v) for s, v in zip(systems, values) if math.isfinite(v)]
    if not finite:
        return UNDEFINED
    best = (max if better == "higher" else min)(v for _, v in finite)
    leaders = [s for s, v in finite if v == best]
    return leaders[0] if len(leaders) == 1 else TIE


def _cell(value: float, metric: Metric, ratio: float | None) -> str:
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.{metric.decimals}f}{metric.suffix}"
    if ratio is not None and math.isfinite(ratio):
        text += f" ({ratio:.2f}x)"
    return text


def _system_names(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    names = [str(s.get("scheduler_type", "")) for s in summaries]
    if any(not n for n in names):
        raise ValueError("every summary needs a non-empty 'scheduler_type' (the system name)")
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    return names


def comparison_rows(
    summaries: Sequence[Mapping[str, Any]],
    metrics: Sequence[Metric] = METRICS,
    baseline: str | None = None,
) -> list[TableRow]:
    """Every row of the comparison table, from ``summarize()`` dicts in column order.

    With ``baseline`` (a system name), each other system's defined cell also
    shows its ratio to the baseline's value on that row (``0.48x``), the
    "ratio against a baseline measured in the same run" our benchmarks print.
    """
    if not summaries:
        raise ValueError("comparison_rows needs at least one system's summary")
    systems = _system_names(summaries)
    if baseline is not None and baseline not in systems:
        raise ValueError(f"baseline {baseline!r} is not one of the systems {systems}")
    rows = []
    for metric in metrics:
        values = tuple(
            round(_number(s.get(metric.key)) * metric.scale, metric.decimals) for s in summaries
        )
        base = values[systems.index(baseline)] if baseline is not None else math.nan
        cells = []
        for name, value in zip(systems, values):
            ratio = None
            if baseline is not None and name != baseline and math.isfinite(base) and base != 0:
                ratio = value / base
            cells.append(_cell(value, metric, ratio))
        rows.append(
            TableRow(
                label=metric.label,
                key=metric.key,
                cells=tuple(cells),
                values=values,
                winner=pick_winner(systems, values, metric.better),
            )
        )
    return rows


def report_title(systems: Sequence[str]) -> str:
    """``COMPARISON REPORT: QUART VS OPENFAAS-CE VS ...`` as in seed 003."""
    return "COMPARISON REPORT: " + " VS ".join(s.upper() for s in systems)


def render_plain(rows: Sequence[TableRow], systems: Sequence[str], title: str | None = None) -> str:
    """Fixed-width text in the seed's layout (``=`` rules, ``-`` under the header)."""
    if not rows:
        raise ValueError("render_plain needs at least one row")
    header = ["Metric", *systems, "Winner"]
    body = [[r.label, *r.cells, r.winner] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) + 2 for i in range(len(header))]
    widths[0] = max(widths[0], 40)
    widths[1:] = [max(w, 20) for w in widths[1:]]
    total = sum(widths)
    lines = ["=" * total, title or report_title(systems), "=" * total, ""]
    lines.append("".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines.append("-" * total)
    for line in body:
        lines.append("".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    lines.append("=" * total)
    return "\n".join(lines) + "\n"


def render_rich(
    rows: Sequence[TableRow], systems: Sequence[str], title: str | None = None
) -> Table:
    """The same rows as a ``rich`` table; each row's winning cell is bold green."""
    if not rows:
        raise ValueError("render_rich needs at least one row")
    table = Table(title=title or report_title(systems), box=box.SIMPLE_HEAVY)
    table.add_column("Metric", style="bold")
    for name in systems:
        table.add_column(Text(name), justify="right")
    table.add_column("Winner")
    for row in rows:
        # Text, not markup strings: a system called "a[1]" must not be parsed as a style.
        cells = [
            Text(cell, style="bold green" if name == row.winner else "")
            for name, cell in zip(systems, row.cells)
        ]
        winner_style = "dim" if row.winner in (TIE, UNDEFINED) else "bold green"
        table.add_row(Text(row.label), *cells, Text(row.winner, style=winner_style))
    return table
