"""What Prometheus would answer: scrapes of the gateway's counters, then PromQL.

The plugin never sees a request; it sees ``rate()`` and ``increase()`` over
scraped samples and ``histogram_quantile`` over bucket rates
(``gateway_plugin/metrics_in.py``'s ``QUERIES``).  This module reproduces
those answers from the simulated gateway's counters, so the policy is fed the
same coarse, lagged, extrapolated numbers it gets live, and then hands them
to the plugin's own ``metrics_in.combine``.

Reproduced from Prometheus 2.42 (the version on this machine),
``promql/functions.go``:

* range selection ``x[w]`` at time t takes the samples with t - w <= ts <= t
  (closed on both ends in 2.x);
* ``extrapolatedRate``: needs >= 2 samples; the increase last - first is
  extrapolated to the window edges when the first/last sample is within
  1.1 x the mean sample spacing of them (else by half a spacing), and no
  further back than the counter's extrapolated zero; ``rate`` divides by w;
* ``histogram_quantile`` (``bucketQuantile``): rank = q x count(+Inf); the
  first bucket whose cumulative count reaches the rank, linear interpolation
  inside it; the +Inf bucket answers the highest finite bound; no
  observations -> NaN (dropped, as ``_fold`` drops non-finite values).

A counter series exists only from its first increment on (the gateway
renders it once it has a value); gauges exist for every deployed function.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from .runtime import BUCKETS, Stage

__all__ = ["Prometheus", "bucket_quantile", "extrapolated_increase"]

# counter columns of one scrape
STARTED, IA_N, IA_S, IA_Q, C_N, C_S, C_Q, LAT_N, LAT_S = range(9)
B0 = 9
NCOL = B0 + len(BUCKETS)
QUEUE, INFLIGHT, READY = range(3)
# which column's series must exist for each column's series to exist
_PRESENCE = [STARTED, IA_N, IA_N, IA_N, C_N, C_N, C_N, LAT_N, LAT_N] + [LAT_N] * len(BUCKETS)


def extrapolated_increase(t_s: np.ndarray, v: np.ndarray, present: np.ndarray, now: float,
                          window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus' ``increase(x[w])`` per column; returns (value, valid).

    ``t_s`` (s,) scrape times, ``v`` (s, n) counter samples, ``present`` (s, n)
    whether the series existed at that scrape.  Counters here never reset.
    """
    sel = (t_s >= now - window_s - 1e-9) & (t_s <= now + 1e-9)
    t, v, p = t_s[sel], v[sel], present[sel]
    n = v.shape[1] if v.ndim == 2 else 0
    if len(t) < 2:
        return np.zeros(n), np.zeros(n, dtype=bool)
    cnt = p.sum(axis=0)
    valid = cnt >= 2
    first = np.argmax(p, axis=0)  # presence is monotone: the first present sample
    cols = np.arange(n)
    v_first, v_last = v[first, cols], v[-1]
    t_first, t_last = t[first], t[-1]
    delta = v_last - v_first
    with np.errstate(divide="ignore", invalid="ignore"):
        sampled = t_last - t_first
        avg = sampled / np.maximum(cnt - 1, 1)
        to_start = t_first - (now - window_s)
        to_end = now - t_last
        to_zero = np.where((delta > 0) & (v_first >= 0), sampled * v_first / delta, np.inf)
        to_start = np.minimum(to_start, to_zero)
        thr = avg * 1.1
        ext = sampled + np.where(to_start < thr, to_start, avg / 2) \
            + np.where(to_end < thr, to_end, avg / 2)
        out = delta * ext / sampled
    valid &= sampled > 0
    return np.where(valid, out, 0.0), valid


def bucket_quantile(q: float, cum: np.ndarray) -> np.ndarray:
    """``histogram_quantile(q, ...)`` per row of cumulative bucket rates (n, len(BUCKETS))."""
    bounds = np.asarray(BUCKETS)
    cum = np.maximum.accumulate(cum, axis=1)  # ensureMonotonic
    total = cum[:, -1]
    rank = q * total
    reach = cum[:, :-1] >= rank[:, None]
    b = np.where(reach.any(axis=1), np.argmax(reach, axis=1), len(bounds) - 1)
    rows = np.arange(len(cum))
    end = bounds[np.minimum(b, len(bounds) - 2)]
    start = np.where(b > 0, bounds[np.maximum(b - 1, 0)], 0.0)
    before = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0.0)
    inside = cum[rows, np.minimum(b, len(bounds) - 1)] - before
    with np.errstate(divide="ignore", invalid="ignore"):
        val = start + (end - start) * (rank - before) / inside
    val = np.where(b == len(bounds) - 1, bounds[-2], val)
    return np.where(total > 0, val, np.nan)


class Prometheus:
    """Scrape ring of the last few samples and the plugin's queries over it."""

    def __init__(self, stages: Sequence[Stage], window_s: float, scrape_s: float) -> None:
        self.stages = list(stages)
        self.names = [s.name for s in self.stages]
        self.window_s = window_s
        keep = int(window_s / scrape_s) + 3
        self.times: deque[float] = deque(maxlen=keep)
        self.counters: deque[np.ndarray] = deque(maxlen=keep)
        self.gauges = np.zeros((len(self.stages), 3))
        self.codes: list[dict[str, int]] = [{} for _ in self.stages]
        self.scrapes = 0

    def scrape(self, now: float) -> None:
        rows = []
        for s in self.stages:
            row = [s.started, s.ia_n, s.ia_s, s.ia_q, s.c_n, s.c_s, s.c_q, s.lat_n, s.lat_s]
            row.extend(s.buckets)
            rows.append(row)
        m = np.array(rows, dtype=float).reshape(len(self.stages), NCOL)
        np.cumsum(m[:, B0:], axis=1, out=m[:, B0:])
        self.times.append(now)
        self.counters.append(m)
        self.gauges = np.array([(len(s.queue), s.inflight(), s.ready_n) for s in self.stages],
                               dtype=float).reshape(len(self.stages), 3)
        self.codes = [dict(s.codes) for s in self.stages]
        self.scrapes += 1

    def raw(self, now: float) -> dict[str, dict[str, float]]:
        """The folded answers of ``metrics_in.QUERIES`` at ``now`` (function -> value)."""
        out: dict[str, dict[str, float]] = {}
        names = self.names
        g = self.gauges
        out["queue"] = dict(zip(names, g[:, QUEUE].tolist(), strict=True))
        out["inflight"] = dict(zip(names, g[:, INFLIGHT].tolist(), strict=True))
        out["replicas"] = dict(zip(names, g[:, READY].tolist(), strict=True))
        if len(self.times) < 2:
            return out
        t = np.fromiter(self.times, dtype=float)
        v = np.stack(list(self.counters))  # (s, n, NCOL)
        w = self.window_s
        s_, n_, _ = v.shape
        present = v[:, :, _PRESENCE] > 0  # each column exists once its family has a sample
        inc, ok = extrapolated_increase(t, v.reshape(s_, n_ * NCOL),
                                        present.reshape(s_, n_ * NCOL), now, w)
        inc, ok = inc.reshape(n_, NCOL), ok.reshape(n_, NCOL)

        def put(key: str, val: np.ndarray, valid: np.ndarray) -> None:
            out[key] = {names[i]: x for i, x in zip(np.flatnonzero(valid).tolist(),
                                                     val[valid].tolist(), strict=True)}

        put("arrivals", inc[:, STARTED] / w, ok[:, STARTED])
        for key, col in (("ia_n", IA_N), ("ia_s", IA_S), ("ia_q", IA_Q),
                         ("c_n", C_N), ("c_s", C_S), ("c_q", C_Q)):
            put(key, inc[:, col], ok[:, col])
        put("lat_count", inc[:, LAT_N] / w, ok[:, LAT_N])
        put("lat_sum", inc[:, LAT_S] / w, ok[:, LAT_S])
        p99 = bucket_quantile(0.99, inc[:, B0:] / w)
        bok = ok[:, LAT_N]
        put("p99", p99, bok & np.isfinite(p99))
        return out

    def in_flight(self) -> dict[str, float]:
        """Queued + in-flight calls per function at the last scrape (the Tick's gauge)."""
        s = self.gauges[:, QUEUE] + self.gauges[:, INFLIGHT]
        return dict(zip(self.names, s.tolist(), strict=True))

    def invocations(self) -> dict[str, dict[str, float]]:
        """``gateway_function_invocation_total`` per function and code at the last scrape."""
        return {n: {c: float(k) for c, k in codes.items()}
                for n, codes in zip(self.names, self.codes, strict=True)}
