"""Recovery time after a failure: until requests meet the SLO again at the 99th percentile.

Definition (ours; seed 003 names the metric without fixing one): for a
failure at t_f, slide a window of ``window_s`` over *arrival* times,
starting at t_f in steps of ``step_s``; the recovery time is t - t_f for the
first window [t, t + window_s) whose requests have p99 latency <= SLO,
counting a failed request as infinitely slow.  Arrival time, not completion
time, because a request that arrives after the failure and waits for a
replacement replica is exactly what the failure costs; a window with no
requests says nothing and is skipped.  0 means the failure never pushed p99
over the SLO; ``inf`` means it did not recover before the run ended.

The p99 is the nearest-rank one (the ceil(0.99 n)-th smallest), which stays
defined with infinite values, where interpolation would give NaN.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["nearest_rank", "recovery_times"]


def nearest_rank(values: np.ndarray, q: float) -> float:
    if not len(values):
        return math.nan
    k = max(0, math.ceil(q * len(values)) - 1)
    return float(np.partition(values, k)[k])


def recovery_times(arrival_s: np.ndarray, latency_s: np.ndarray, ok: np.ndarray,
                   fail_times: Sequence[float], slo_s: float, window_s: float = 10.0,
                   step_s: float = 0.5, q: float = 0.99) -> list[float]:
    if window_s <= 0 or step_s <= 0:
        raise ValueError("window_s and step_s must be > 0")
    order = np.argsort(arrival_s, kind="stable")
    t = np.asarray(arrival_s, dtype=float)[order]
    lat = np.where(np.asarray(ok, dtype=bool), np.asarray(latency_s, dtype=float), np.inf)[order]
    lat = np.where(np.isnan(lat), np.inf, lat)
    out = []
    end = float(t[-1]) if len(t) else 0.0
    for tf in fail_times:
        rec = math.inf
        start = float(tf)
        while start <= end:
            a, b = np.searchsorted(t, [start, start + window_s], side="left")
            if b > a and nearest_rank(lat[a:b], q) <= slo_s:
                rec = start - float(tf)
                break
            start += step_s
        out.append(rec)
    return out
