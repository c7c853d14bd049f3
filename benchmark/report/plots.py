"""The comparison's figures, as PNG files (matplotlib's Agg canvas, no display needed).

Three figures answer the three questions a reader of a comparison asks:

* **latency CDF** — how often is each system fast, and how long is its tail?
  The y axis is the share of *all* requests answered within x, so failures
  keep a curve below 1 instead of silently vanishing; the SLO is a line.
* **replicas over time per stage** — what did each system do when the burst
  came?  One panel per stage, one line per system, the arrival rate behind.
* **P99 and cost vs CV** — how does each system degrade as burstiness grows,
  and what does it pay for it (replica-seconds)?

Figures are built on :class:`matplotlib.figure.Figure` rather than ``pyplot``
so no global state is touched: the harness may draw from a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from benchmark.report.naming import safe_name
from benchmark.results import RunResult, TimelineRow

__all__ = ["plot_cv_sweep", "plot_latency_cdf", "plot_replicas_over_time", "write_run_plots"]

_DPI = 120
# "100", "1,000" rather than "10^2", "10^3" on log axes: readers compare numbers, not exponents.
_PLAIN = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)  # layout is constrained at creation: one draw, not two
    return path


def _require(results: Sequence[RunResult], what: str) -> None:
    if not results:
        raise ValueError(f"{what} needs at least one RunResult, got none")
    names = [r.system for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: system names must be unique, got {names}")


def plot_latency_cdf(results: Sequence[RunResult], path: Path, title: str | None = None) -> Path:
    """Empirical CDF of end-to-end latency (ms, log x) per system, with the SLO marked."""
    _require(results, "plot_latency_cdf")
    if not any(int(r.ok.sum()) for r in results):
        raise ValueError("plot_latency_cdf: no system answered any request successfully")
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for r in results:
        lat_ms = np.sort(r.latency_s[r.ok & np.isfinite(r.latency_s)]) * 1000.0
        n = len(r.ok)
        if not len(lat_ms):
            ax.plot([], [], label=f"{r.system}: no successful request")
            continue
        share = np.arange(1, len(lat_ms) + 1) / n
        p99 = float(np.percentile(lat_ms, 99))
        ax.step(
            lat_ms,
            share,
            where="post",
            label=f"{r.system}  (p99 {p99:,.0f} ms, {100 * len(lat_ms) / n:.1f}% ok)",
        )
    for slo_s in sorted({r.slo_s for r in results if r.slo_s and math.isfinite(r.slo_s)}):
        ax.axvline(
            slo_s * 1000.0,
            color="crimson",
            linestyle="--",
            linewidth=1.2,
            label=f"SLO {slo_s * 1000.0:,.0f} ms",
        )
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("end-to-end latency (ms, log scale)")
    ax.set_ylabel("share of all requests answered within x")
    ax.set_title(title or f"Latency CDF — {_workload_label(results[0].workload)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def _workload_label(workload: Mapping[str, Any]) -> str:
    parts = [str(workload.get("name", "workload"))]
    for key, unit in (("rps", " rps"), ("cv", ""), ("duration_s", " s")):
        if key in workload:
            parts.append(f"{'CV ' if key == 'cv' else ''}{workload[key]}{unit}")
    return ", ".join(parts)


def _stages(results: Sequence[RunResult]) -> list[str]:
    seen: dict[str, None] = {}
    for r in results:
        for row in r.timeline:
            seen.setdefault(row.stage, None)
    return list(seen)


def _series(rows: list[TimelineRow], stage: str) -> tuple[np.ndarray, np.ndarray]:
    picked = sorted((row.t_s, row.replicas) for row in rows if row.stage == stage)
    return np.array([p[0] for p in picked]), np.array([p[1] for p in picked], dtype=float)


def _total_series(rows: list[TimelineRow]) -> tuple[np.ndarray, np.ndarray]:
    """Replicas summed over stages as a step function over every sampled instant.

    Stages need not be sampled at the same instants: each contributes its
    last value at or before ``t`` (nothing before its first sample).
    """
    per_stage: dict[str, list[tuple[float, int]]] = {}
    for row in rows:
        per_stage.setdefault(row.stage, []).append((row.t_s, row.replicas))
    t = np.array(sorted({row.t_s for row in rows}))
    total = np.zeros(len(t))
    for samples in per_stage.values():
        samples.sort()
        st = np.array([s[0] for s in samples])
        n = np.array([s[1] for s in samples], dtype=float)
        idx = np.searchsorted(st, t, side="right") - 1
        total += np.where(idx >= 0, n[np.clip(idx, 0, None)], 0.0)
    return t, total


def _arrival_rate(arrival_s: np.ndarray, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Arrivals per second in about 120 bins (at least 1 s each) over the run.

    Returned as step points with the closing edge repeated, so a ``post``
    step draws the last bin too.
    """
    if not len(arrival_s) or end_s <= 0:
        return np.array([]), np.array([])
    width = max(1.0, end_s / 120.0)
    edges = np.arange(0.0, end_s + width, width)
    counts, _ = np.histogram(arrival_s, bins=edges)
    rate = counts / width
    return edges, np.append(rate, rate[-1])


def _draw_rate(ax: Axes, t: np.ndarray, rate: np.ndarray) -> None:
    if not len(t):
        return
    twin = ax.twinx()
    twin.fill_between(t, rate, step="post", color="grey", alpha=0.18, linewidth=0)
    twin.set_ylabel("pipeline arrivals/s", color="dimgrey")
    twin.tick_params(axis="y", colors="dimgrey")
    twin.set_ylim(bottom=0)
    ax.set_zorder(twin.get_zorder() + 1)  # replica lines above the shaded rate
    ax.patch.set_visible(False)


def plot_replicas_over_time(
    results: Sequence[RunResult], path: Path, max_panels: int = 8, title: str | None = None
) -> Path:
    """One panel per stage (replicas ready, step lines per system), arrival rate behind.

    A cluster-scale run has hundreds of stages; beyond ``max_panels`` the
    figure shows the total over all stages first, then the busiest stages
    (highest peak replicas over all systems), and says so in its title.
    """
    _require(results, "plot_replicas_over_time")
    if max_panels < 1:
        raise ValueError("max_panels must be at least 1")
    stages = _stages(results)
    if not stages:
        raise ValueError("plot_replicas_over_time: no result has a timeline to plot")
    panels: list[str | None] = list(stages)  # None = total over all stages
    note = ""
    if len(stages) > max_panels:
        peak = {s: 0 for s in stages}
        for r in results:
            for row in r.timeline:
                peak[row.stage] = max(peak[row.stage], row.replicas)
        order = {s: i for i, s in enumerate(stages)}
        busiest = sorted(stages, key=lambda s: (-peak[s], order[s]))[: max_panels - 1]
        panels = [None, *sorted(busiest, key=order.__getitem__)]
        note = f" (total, then the {len(busiest)} busiest of {len(stages)} stages)"
    end_s = max((row.t_s for r in results for row in r.timeline), default=0.0)
    end_s = max(
        end_s, max((float(r.arrival_s.max()) for r in results if len(r.arrival_s)), default=0.0)
    )
    rate_t, rate = _arrival_rate(results[0].arrival_s, end_s)
    fig = Figure(figsize=(10, 2.3 * len(panels) + 0.8), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(results))]
    # Earlier systems drawn thicker, so a later one on the same values does not hide them.
    widths = [max(1.0, 2.6 - 0.4 * i) for i in range(len(results))]
    for ax, stage in zip(axes, panels):
        _draw_rate(ax, rate_t, rate)
        top = 1.0
        for r, colour, width in zip(results, colours, widths):
            t, n = _series(r.timeline, stage) if stage is not None else _total_series(r.timeline)
            if len(t):
                ax.step(t, n, where="post", color=colour, label=r.system, linewidth=width)
                top = max(top, float(n.max()))
        ax.set_ylabel("replicas")
        ax.set_ylim(0, top * 1.3)  # headroom for the legend above the highest line
        ax.set_title(
            stage if stage is not None else "all stages (total)", fontsize="medium", loc="left"
        )
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small", ncol=min(4, len(results)))
    axes[-1].set_xlabel("time since first arrival (s)")
    fig.suptitle(
        title
        or f"Replicas ready per stage{note} — "
        f"{_workload_label(results[0].workload)}; grey: arrival rate"
    )
    return _save(fig, path)


def _sweep_points(
    rows: Sequence[tuple[float, str, Mapping[str, Any]]],
) -> tuple[dict[str, list[tuple[float, float, float]]], set[float]]:
    """Per system its (cv, p99, cost) points; the SLOs seen.  ValueError on a bad row."""
    if not rows:
        raise ValueError("plot_cv_sweep needs at least one (cv, system, summary) row")
    by_system: dict[str, list[tuple[float, float, float]]] = {}
    slos: set[float] = set()
    for cv, system, summary in rows:
        if not (isinstance(cv, int | float) and math.isfinite(cv) and cv > 0):
            raise ValueError(f"CV must be a positive number, got {cv!r} for {system}")
        for key in ("p99_latency", "replica_seconds"):
            if key not in summary:
                raise ValueError(f"summary for {system} at CV {cv} lacks {key!r}")
        p99, cost = float(summary["p99_latency"]), float(summary["replica_seconds"])
        by_system.setdefault(system, []).append((float(cv), p99, cost))
        slo = summary.get("slo_s")
        if isinstance(slo, int | float) and math.isfinite(slo) and slo > 0:
            slos.add(float(slo))
    return by_system, slos


def plot_cv_sweep(
    rows: Sequence[tuple[float, str, Mapping[str, Any]]], path: Path, title: str | None = None
) -> Path:
    """P99 latency and replica-seconds against arrival CV, one line per system.

    ``rows`` are ``(cv, system, summarize(...))``.  The CV axis is logarithmic
    (the sweep is 0.1 … 8) with a tick at every measured CV; P99 goes to a log
    axis when it spans more than 20x, which bursty workloads routinely do.
    """
    by_system, slos = _sweep_points(rows)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_p99, ax_cost = fig.subplots(1, 2)
    cvs = sorted({float(r[0]) for r in rows})
    p99_all = [p for pts in by_system.values() for _, p, _ in pts if math.isfinite(p) and p > 0]
    for i, (system, pts) in enumerate(by_system.items()):
        pts.sort()
        x = [p[0] for p in pts]
        style = {  # earlier systems larger, so equal values further down the list stay visible
            "marker": "o",
            "markersize": max(4.0, 9.0 - 2.0 * i),
            "color": f"C{i % 10}",
            "label": system,
            "linewidth": max(1.0, 2.6 - 0.4 * i),
        }
        ax_p99.plot(x, [p[1] for p in pts], **style)  # NaN (no success) leaves a gap
        ax_cost.plot(x, [p[2] for p in pts], **style)
    for slo in sorted(slos):
        ax_p99.axhline(
            slo * 1000.0,
            color="crimson",
            linestyle="--",
            linewidth=1.2,
            label=f"SLO {slo * 1000.0:,.0f} ms",
        )
    if p99_all and max(p99_all) / min(p99_all) > 20:
        ax_p99.set_yscale("log")
        ax_p99.yaxis.set_major_formatter(_PLAIN)
    for ax in (ax_p99, ax_cost):
        if len(cvs) > 1 and cvs[-1] / cvs[0] >= 4:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(cvs))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{c:g}" for c in cvs])
        ax.set_xlabel("arrival CV (burstiness)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    ax_p99.set_ylabel("P99 latency (ms)")
    ax_p99.set_title("Tail latency")
    ax_cost.set_ylabel("replica-seconds (all stages)")
    ax_cost.set_ylim(bottom=0)
    ax_cost.set_title("Cost")
    fig.suptitle(title or "P99 latency and cost vs burstiness")
    return _save(fig, path)


def write_run_plots(
    results: Sequence[RunResult], out_dir: Path, name: str, stamp: str
) -> dict[str, Path]:
    """Both per-run figures, named like the CSVs: ``<name>_latency_cdf_<stamp>.png``, ...

    A figure with nothing to draw is skipped, not an error: a run in which
    every request failed, or whose timeline scrape failed, must still leave
    its CSVs, table and the other figure behind.  The returned dict says
    which figures were written.
    """
    _require(results, "write_run_plots")
    base = Path(out_dir)
    prefix = safe_name(name)
    out = {}
    if any(r.ok.any() for r in results):
        out["latency_cdf"] = plot_latency_cdf(results, base / f"{prefix}_latency_cdf_{stamp}.png")
    if _stages(results):
        out["replicas"] = plot_replicas_over_time(results, base / f"{prefix}_replicas_{stamp}.png")
    return out
