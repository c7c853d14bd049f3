"""Recovery time after a node failure: until the rolling p99 is back under the SLO.

Definition (issue 7): recovery ends at the first sample time t after the
failure at which both hold:

1. the p99 latency of the requests that *arrived* in (t - window, t] is at
   most the SLO, a failed request counting as an infinitely slow one (a
   failure is the worst SLO miss, not a request to leave out).  The window must
   hold at least one request that arrived *after* the failure: one with only
   earlier arrivals says nothing about the cluster since (with bursty traffic
   the first seconds after a failure are often silent, and a coordinator that
   is still failing over would otherwise look recovered);
2. every model the failed node held is loaded on some live node again — or
   has not been asked for since the failure (a model nobody requests is not
   missed by anyone).

Percentiles use numpy's default linear interpolation, as ``results.summarize``.
By arrival time, so a request that waits out a coordinator failover counts in
the window it arrived in, which is when its user was affected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["recovery_time", "rolling_p99"]


def rolling_p99(arrival_s: np.ndarray, latency_s: np.ndarray, ok: np.ndarray, t: float,
                window_s: float) -> float:
    """p99 over arrivals in (t - window_s, t], failures as +inf; NaN if the window is empty."""
    lo = int(np.searchsorted(arrival_s, t - window_s, side="right"))
    hi = int(np.searchsorted(arrival_s, t, side="right"))
    if hi <= lo:
        return math.nan
    lat = np.where(ok[lo:hi], latency_s[lo:hi], np.inf)
    if np.isinf(lat).any():
        # numpy interpolates inf into nan; rank directly: the 99th percentile is inf as soon
        # as the failures make up more than the top 1 % of the window
        k = (hi - lo - 1) * 0.99
        srt = np.sort(lat)
        a, b = srt[math.floor(k)], srt[math.ceil(k)]
        return float(b if math.isinf(a) or math.isinf(b) else a + (b - a) * (k - math.floor(k)))
    return float(np.percentile(lat, 99))


def recovery_time(fail_at_s: float, arrival_s: np.ndarray, latency_s: np.ndarray,
                  ok: np.ndarray, slo_s: float, window_s: float,
                  sample_times: Sequence[float], available: Sequence[frozenset[str]],
                  lost_models: Sequence[str], model_of: Sequence[str]) -> float:
    """Seconds from the failure to recovery (see the module docstring); inf if never.

    ``arrival_s`` must be sorted; ``model_of[i]`` is request i's model;
    ``available[k]`` the models loaded on live nodes at ``sample_times[k]``.
    """
    if len(sample_times) != len(available):
        raise ValueError("sample_times and available differ in length")
    order = np.argsort(arrival_s, kind="stable")
    arr, lat, good = arrival_s[order], latency_s[order], ok[order]
    models = np.asarray(model_of, dtype=object)[order]
    first_ask = {}
    after = arr > fail_at_s
    for m in lost_models:
        idx = np.flatnonzero(after & (models == m))
        first_ask[m] = float(arr[idx[0]]) if len(idx) else math.inf
    for t, avail in zip(sample_times, available, strict=True):
        if t <= fail_at_s:
            continue
        if any(first_ask[m] <= t and m not in avail for m in lost_models):
            continue
        since = np.searchsorted(arr, max(fail_at_s, t - window_s), side="right")
        if np.searchsorted(arr, t, side="right") <= since:
            continue
        p99 = rolling_p99(arr, lat, good, t, window_s)
        if not math.isnan(p99) and p99 <= slo_s:
            return float(t - fail_at_s)
    return math.inf
