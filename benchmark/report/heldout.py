"""Median and worst over seeds: the held-out table of ``quart-faas compare --seeds``.

One seed's P99 is one draw of a heavy-tailed statistic (at CV 8 a handful of
bursts decide it), so a claim is made on several seeds nobody tuned on: the
median over seeds, and the worst seed.  "Worst" is the highest P99 and
replica-seconds and the lowest SLO attainment.  The goal line compares Quart
with the best baseline (lowest median P99 among the non-Quart systems):
median P99 ratio, replica-seconds ratio, and the worst per-seed P99 ratio
(Quart's P99 over that baseline's on the same seed's arrivals).
"""
from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.report.naming import safe_name
from benchmark.results import RunResult, summarize

__all__ = ["aggregate", "render", "write"]

Runs = Sequence[tuple[int, float, RunResult]]


WARMUP_S = 120.0  # "after the first bursts": requests sent after this many seconds


def p99_after(r: RunResult, t_s: float) -> float:
    """P99 (ms) of the successful requests sent after ``t_s``: how much of a P99 the first
    bursts (before any rate statistic exists) account for."""
    keep = r.ok & (r.arrival_s >= t_s)
    return float(np.percentile(r.latency_s[keep], 99) * 1000.0) if keep.any() else math.nan


def _per_seed(runs: Runs) -> dict[float, dict[str, dict[int, dict[str, Any]]]]:
    out: dict[float, dict[str, dict[int, dict[str, Any]]]] = {}
    for seed, cv, r in runs:
        s = summarize(r)
        rep = r.extra.get("system_report")
        out.setdefault(cv, {}).setdefault(r.system, {})[seed] = {
            "p99_ms": s["p99_latency"], "slo": s["slo_attainment"],
            "p99_after_ms": p99_after(r, WARMUP_S),
            "replica_s": s["replica_seconds"], "predictor": rep}
    return out


def _predictors(reps: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    got = [r for r in reps if r is not None and r.get("smoothing")]
    if not got:
        return None
    selected: dict[str, int] = {}
    maes: dict[str, list[float]] = {}
    for r in got:
        for k, v in r.get("selected", {}).items():
            selected[k] = selected.get(k, 0) + int(v)
        for k, v in r.get("median_validation_mae", {}).items():
            maes.setdefault(k, []).append(float(v))
    return {"rounds": sum(int(r.get("rounds", 0)) for r in got), "selected": selected,
            "median_validation_mae": {k: statistics.median(v) for k, v in maes.items()}}


def aggregate(runs: Runs) -> dict[str, Any]:
    """Per CV, per system: median and worst over seeds; the goal's ratios for Quart."""
    doc: dict[str, Any] = {}
    for cv, systems in sorted(_per_seed(runs).items()):
        rows = {}
        for name, seeds in systems.items():
            v = list(seeds.values())
            p99 = [x["p99_ms"] for x in v]
            rows[name] = {"seeds": sorted(seeds), "p99_median": statistics.median(p99),
                          "p99_worst": max(p99),
                          "p99_after_warmup_median": statistics.median(
                              x["p99_after_ms"] for x in v),
                          "slo_median": statistics.median(x["slo"] for x in v),
                          "slo_worst": min(x["slo"] for x in v),
                          "replica_s_median": statistics.median(x["replica_s"] for x in v),
                          "replica_s_worst": max(x["replica_s"] for x in v),
                          "cv_predictor": _predictors([x["predictor"] for x in v])}
        doc[f"{cv:g}"] = {"systems": rows, "goal": _goal(systems, rows)}
    return doc


def _goal(systems: Mapping[str, Mapping[int, Mapping[str, Any]]],
          rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    base = [n for n in rows if not n.startswith("quart")]
    if "quart" not in rows or not base:
        return None
    best = min(base, key=lambda n: rows[n]["p99_median"])
    q, b = rows["quart"], rows[best]
    per_seed = [systems["quart"][s]["p99_ms"] / systems[best][s]["p99_ms"]
                for s in systems["quart"] if s in systems[best]]
    return {"best_baseline": best, "p99_ratio_median": q["p99_median"] / b["p99_median"],
            "replica_s_ratio_median": q["replica_s_median"] / b["replica_s_median"],
            "p99_ratio_worst_seed": max(per_seed) if per_seed else math.nan,
            "met": (q["p99_median"] <= 0.5 * b["p99_median"]
                    and q["replica_s_median"] <= b["replica_s_median"]
                    and bool(per_seed) and max(per_seed) <= 0.8)}


def _ms(v: float) -> str:
    """A run shorter than the warm-up has no requests after it: a dash, not "nan"."""
    return "—" if math.isnan(v) else f"{v:.0f}"


def render(doc: Mapping[str, Any], title: str) -> str:
    """Markdown: one table per CV, the goal line, the predictor line."""
    out = [f"### {title}", ""]
    for cv, part in doc.items():
        out += [f"CV {cv}", "", "| system | P99 ms median | P99 worst | SLO median | SLO worst "
                f"| rep-s median | rep-s worst | P99 after {WARMUP_S:g} s |",
                "|---|---|---|---|---|---|---|---|"]
        for name, r in part["systems"].items():
            out.append(f"| {name} | {r['p99_median']:.0f} | {r['p99_worst']:.0f} | "
                       f"{r['slo_median']:.1%} | {r['slo_worst']:.1%} | "
                       f"{r['replica_s_median']:.0f} | {r['replica_s_worst']:.0f} | "
                       f"{_ms(r['p99_after_warmup_median'])} |")
        g = part["goal"]
        if g:
            out += ["", f"quart vs best baseline ({g['best_baseline']}): median P99 "
                        f"{g['p99_ratio_median']:.2f}x at {g['replica_s_ratio_median']:.2f}x its "
                        f"replica-seconds; worst seed {g['p99_ratio_worst_seed']:.2f}x; goal "
                        f"{'met' if g['met'] else 'missed'}"]
        for name, r in part["systems"].items():
            p = r["cv_predictor"]
            if p:
                sel = ", ".join(f"{k} {v}" for k, v in sorted(p["selected"].items())) or "none"
                mae = ", ".join(f"{k} {v:.3f}" for k, v in
                                sorted(p["median_validation_mae"].items())) or "-"
                out.append(f"- {name} CV predictor: {p['rounds']} rounds; selected {sel}; "
                           f"median validation MAE {mae}")
        out.append("")
    return "\n".join(out)


def write(runs: Runs, out_dir: Path, name: str, stamp: str,
          command: Sequence[str]) -> tuple[Path, Path]:
    """``<name>_heldout_<stamp>.md`` and ``.json``."""
    doc = aggregate(runs)
    seeds = sorted({s for s, _, _ in runs})
    title = f"{name}: seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} seeds)"
    base = f"{safe_name(name)}_heldout_{stamp}"  # a name may hold dots (s2.5): no with_suffix
    md = Path(out_dir) / f"{base}.md"
    md.write_text(render(doc, title) + f"\ncommand: {' '.join(command)}\n")
    js = Path(out_dir) / f"{base}.json"
    js.write_text(json.dumps({"command": list(command), "seeds": seeds, "by_cv": doc},
                             indent=2, default=str) + "\n")
    return md, js
