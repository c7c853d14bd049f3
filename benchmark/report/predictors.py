"""Quart's CV predictor in a comparison: which predictor each training round selected,
its validation error, and how many control periods each one decided.

The claim that a learned (GAT) CV predictor helps stands or falls on these
figures, so every comparison prints them beside the latency table.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["predictor_lines"]


def _fmt(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def predictor_lines(reports: Mapping[str, Mapping[str, Any]] | Sequence[Any]) -> str:
    """One line per system that reports a predictor: rounds, selections, median validation
    MAE per predictor, periods each predictor was in use."""
    if not isinstance(reports, Mapping):
        reports = {r.system: r.extra["system_report"] for r in reports
                   if isinstance(r.extra.get("system_report"), Mapping)}
    lines = []
    for system, rep in reports.items():
        if "error" in rep:  # a live plugin that could not be read
            lines.append(f"{system}: {rep['error']}")
            continue
        if not rep.get("smoothing"):
            lines.append(f"{system}: no smoothing, the CV predictor is unused")
            continue
        mae = {k: f"{v:.3f}" for k, v in rep.get("median_validation_mae", {}).items()}
        lines.append(
            f"{system}: {rep.get('rounds', 0)} validated training round(s) "
            f"(held out by {'/'.join(rep.get('holdout', [])) or '-'}); selected: "
            f"{_fmt(rep.get('selected', {}))}; median validation MAE: {_fmt(mae)}; "
            f"periods in use: {_fmt(rep.get('periods_in_use', {}))}")
    return ("CV predictor\n" + "\n".join(lines) + "\n") if lines else ""
