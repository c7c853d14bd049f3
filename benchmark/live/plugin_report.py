"""What the live plugin's CV predictor did in a run, in the simulated Quart's report shape.

Why: the GAT's claim stands or falls on which predictor each training round selected and
its validation error (issue 15), and a live run is where it counts.  The plugin keeps every
validated round with its state in Redis (``GET /predictor``) and every decision with the
predictor that made it (``GET /decisions``); read both before the deployment goes, and
summarise them as ``benchmark.systems.quart.predictor_report`` does, so that
``predictor_lines`` and the JSON summary's ``cv_predictors`` treat live and simulated alike.
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import requests

DECISIONS_MAX = 1000  # what /decisions answers at most


def summarize(predictor: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]],
              smoothing: bool = True) -> dict[str, Any]:
    """Selections and median validation MAE over the rounds; control periods per predictor
    (one per distinct decision time, among the last ``DECISIONS_MAX`` decisions)."""
    selected: dict[str, int] = {}
    maes: dict[str, list[float]] = {}
    rounds = list(predictor.get("rounds", []))
    for r in rounds:
        selected[r["predictor"]] = selected.get(r["predictor"], 0) + 1
        for k, v in (r.get("validation_mae") or {}).items():
            if isinstance(v, (int, float)) and v == v:  # not NaN
                maes.setdefault(k, []).append(float(v))
    periods: dict[str, set[float]] = {}
    for d in decisions:
        if d.get("predictor"):
            periods.setdefault(str(d["predictor"]), set()).add(float(d.get("t", 0.0)))
    return {"smoothing": smoothing, "trains": True, "rounds": len(rounds),
            "selected": selected,
            "median_validation_mae": {k: statistics.median(v) for k, v in maes.items()},
            "holdout": sorted({str(r.get("holdout", "")) for r in rounds}),
            "periods_in_use": {k: len(v) for k, v in periods.items()},
            "final": predictor.get("predictor"), "last_reason": predictor.get("reason")}


def fetch(plugin_url: str, auth: tuple[str, str], smoothing: bool = True) -> dict[str, Any]:
    """The plugin's report, or ``{"error": ...}`` when it cannot be read (the run's
    latencies stand without it)."""
    try:
        pred = requests.get(f"{plugin_url}/predictor", auth=auth, timeout=10)
        dec = requests.get(f"{plugin_url}/decisions", params={"n": DECISIONS_MAX}, auth=auth,
                           timeout=10)
        pred.raise_for_status()
        dec.raise_for_status()
        return summarize(pred.json(), dec.json(), smoothing)
    except (requests.RequestException, ValueError, KeyError, TypeError) as e:
        return {"error": f"the plugin's predictor report is unreadable: {type(e).__name__}: {e}"}
