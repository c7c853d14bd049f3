"""What a comparison leaves on disk: per-system CSVs, a JSON summary, the plain table.

File names follow seed 003 (``<name>_<system>_<YYYYmmdd_HHMMSS>.csv``, one row
with :data:`~benchmark.results.SUMMARY_COLUMNS`) so scripts written for the
seed's results directory keep working.  The JSON file is the one document a
reader needs to trust a comparison: the workload and its arrivals hash (and
whether every system really saw the same arrivals), every system's summary,
the winner of every metric, and the command line that produced it.

Undefined numbers (NaN) are written as empty CSV cells and JSON ``null``:
strict JSON has no NaN, and an empty cell is what spreadsheet tools and
pandas read as missing.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.report.naming import safe_name
from benchmark.report.predictors import predictor_lines
from benchmark.report.table import METRICS, comparison_rows, render_plain
from benchmark.results import SUMMARY_COLUMNS, RunResult, summarize

__all__ = [
    "ReportFiles",
    "comparison_document",
    "csv_path",
    "read_summary_csv",
    "safe_name",
    "timestamp",
    "write_report",
    "write_summary_csv",
]

CLOCK_KEYS = ("scrape_s", "scrapes", "period_s", "control_ticks", "rate_window_s")
_INT_COLUMNS = {
    "total_requests",
    "successful_requests",
    "failed_requests",
    "serve_count",
    "cold_start_count",
    "migrate_count",
}
_STR_COLUMNS = {
    "experiment_name",
    "scheduler_type",
    "start_time",
    "end_time",
    "mode",
    "workload_sha256",
}


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`; ``csv`` is keyed by system name."""

    csv: dict[str, Path]
    json: Path
    table: Path
    plots: dict[str, Path] = field(default_factory=dict)


def timestamp(now: datetime | None = None) -> str:
    """The seed's ``YYYYmmdd_HHMMSS`` stamp (local time, like the seed)."""
    return (now or datetime.now()).strftime("%Y%m%d_%H%M%S")


def csv_path(out_dir: Path, name: str, system: str, stamp: str) -> Path:
    """``<out_dir>/<name>_<system>_<stamp>.csv``, as seed 003 names its results."""
    return Path(out_dir) / f"{safe_name(name)}_{safe_name(system)}_{stamp}.csv"


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return ""
    return value


def write_summary_csv(summary: Mapping[str, Any], path: Path) -> Path:
    """One header row of ``SUMMARY_COLUMNS`` and one data row; NaN as an empty cell."""
    missing = [c for c in SUMMARY_COLUMNS if c not in summary]
    if missing:
        raise ValueError(f"summary lacks columns {missing}; build it with summarize()")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SUMMARY_COLUMNS)
        writer.writerow([_csv_cell(summary[c]) for c in SUMMARY_COLUMNS])
    return path


def read_summary_csv(path: Path) -> dict[str, Any]:
    """Read a file written by :func:`write_summary_csv` back into typed values."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise ValueError(f"{path}: expected one data row, found {len(rows)}")
    out: dict[str, Any] = {}
    for key, text in rows[0].items():
        if key in _STR_COLUMNS:
            out[key] = text
        elif text == "":
            out[key] = math.nan
        elif key in _INT_COLUMNS:
            out[key] = int(text)
        else:
            out[key] = float(text)
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN/inf become null, numpy scalars and arrays become Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def comparison_document(
    results: Sequence[RunResult],
    experiment_name: str,
    command: Sequence[str] | None = None,
    summaries: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON summary of a comparison as a dict (see module docstring for why each part)."""
    if not results:
        raise ValueError("a comparison needs at least one RunResult")
    if summaries is None:
        summaries = [summarize(r, experiment_name) for r in results]
    argv = list(sys.argv if command is None else command)
    hashes = {r.system: str(r.workload.get("sha256", "")) for r in results}
    distinct = set(hashes.values())
    shared = distinct.pop() if len(distinct) == 1 else ""
    rows = comparison_rows(summaries)
    names = [r.system for r in results]
    by_key = {m.key: m for m in METRICS}
    return _jsonable(
        {
            "experiment_name": experiment_name,
            "command": {"argv": argv, "line": shlex.join(argv)},
            "mode": sorted({r.mode for r in results}),
            "workload": dict(results[0].workload),
            "arrivals_sha256": shared or None,
            # Only a declared, shared hash proves identical arrivals; a missing one proves nothing.
            "identical_arrivals": bool(shared),
            "arrivals_sha256_by_system": hashes,
            "systems": names,
            "summaries": {s["scheduler_type"]: dict(s) for s in summaries},
            # Quart's CV predictor: rounds won and validation MAE (systems that report one)
            "cv_predictors": {r.system: r.extra["system_report"] for r in results
                              if isinstance(r.extra.get("system_report"), Mapping)},
            # the simulated clocks each system ran on (benchmark/clocks.py)
            "clocks": {r.system: {k: r.extra[k] for k in CLOCK_KEYS if k in r.extra}
                       for r in results if r.mode == "sim"},
            "winners": {
                row.key: {
                    "label": row.label,
                    "better": by_key[row.key].better,
                    "winner": row.winner,
                    "values": dict(zip(names, row.values)),
                }
                for row in rows
            },
        }
    )


def _workload_line(workload: Mapping[str, Any]) -> str:
    parts = [
        f"{k}={workload[k]}" for k in ("name", "rps", "cv", "duration_s", "seed") if k in workload
    ]
    sha = workload.get("sha256")
    if sha:
        parts.append(f"arrivals sha256={sha}")
    return "workload: " + " ".join(parts)


def write_report(
    results: Sequence[RunResult],
    out_dir: Path,
    experiment_name: str,
    command: Sequence[str] | None = None,
    stamp: str | None = None,
    baseline: str | None = None,
    plots: bool = False,
) -> ReportFiles:
    """Write the CSVs, ``<name>_<stamp>.json`` and ``<name>_<stamp>.txt``; return their paths.

    ``command`` defaults to ``sys.argv``; ``baseline`` adds ratio-to-baseline
    figures to the text table (the JSON keeps raw values); ``plots`` also
    draws the latency CDF and replicas-over-time PNGs and lists them in the JSON.
    """
    if not results:
        raise ValueError("write_report needs at least one RunResult")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = stamp or timestamp()
    summaries = [summarize(r, experiment_name) for r in results]
    names = [r.system for r in results]
    rows = comparison_rows(summaries, baseline=baseline)  # validates names before writing
    csvs = {
        s["scheduler_type"]: write_summary_csv(
            s, csv_path(out_dir, experiment_name, s["scheduler_type"], stamp)
        )
        for s in summaries
    }
    doc = comparison_document(results, experiment_name, command, summaries)
    doc["files"] = {"csv": {k: v.name for k, v in csvs.items()}}
    base = f"{safe_name(experiment_name)}_{stamp}"
    table_path = out_dir / f"{base}.txt"
    table_path.write_text(
        render_plain(rows, names)
        + _workload_line(results[0].workload)
        + "\n"
        + predictor_lines(results)
        + (
            ""
            if doc["identical_arrivals"]
            else "WARNING: arrivals hash missing or different between systems\n"
        )
    )
    doc["files"]["table"] = table_path.name
    pngs: dict[str, Path] = {}
    if plots:
        from benchmark.report.plots import write_run_plots  # late: matplotlib is slow to import

        pngs = write_run_plots(results, out_dir, experiment_name, stamp)
        doc["files"]["plots"] = {k: v.name for k, v in pngs.items()}
    json_path = out_dir / f"{base}.json"
    json_path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return ReportFiles(csv=csvs, json=json_path, table=table_path, plots=pngs)
