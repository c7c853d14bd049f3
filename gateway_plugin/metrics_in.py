"""What the plugin reads from Prometheus, per function, over one window.

One PromQL query per quantity for *all* functions (grouped by
``function_name``), so a cycle costs a fixed number of queries whatever the
number of stages.  ``function_name`` may carry the ``.namespace`` suffix or
not; both are folded onto the bare name.

Missing is not zero: a function without samples gets ``None`` fields, and
``MetricsUnavailable`` means Prometheus itself did not answer — the control
loop then holds its last decision instead of acting on nothing.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from gateway_plugin.arrivals import CvEstimate, cv_from_counts, cv_from_moments, strip_namespace


class MetricsUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class FunctionMetrics:
    arrival_rate: float | None = None
    latency_mean_s: float | None = None
    latency_p99_s: float | None = None
    queue_depth: float | None = None
    inflight: float | None = None
    available_replicas: float | None = None
    arrival_cv: float | None = None
    arrival_cv_source: str = "none"
    compute_mean_s: float | None = None
    compute_cv: float | None = None
    completions: float = 0.0


QUERIES = {
    "arrivals": "sum by (function_name) (rate(gateway_function_invocation_started[{w}]))",
    "lat_sum": "sum by (function_name) (rate(gateway_functions_seconds_sum[{w}]))",
    "lat_count": "sum by (function_name) (rate(gateway_functions_seconds_count[{w}]))",
    "p99": "histogram_quantile(0.99, sum by (le, function_name) "
           "(rate(gateway_functions_seconds_bucket[{w}])))",
    "queue": "max by (function_name) (quart_function_queue_depth)",
    "inflight": "max by (function_name) (quart_function_inflight)",
    "replicas": "max by (function_name) (gateway_service_count)",
    "ia_n": "sum by (function_name) (increase(quart_function_interarrival_seconds_count[{w}]))",
    "ia_s": "sum by (function_name) (increase(quart_function_interarrival_seconds_sum[{w}]))",
    "ia_q": "sum by (function_name) "
            "(increase(quart_function_interarrival_seconds_squares_sum[{w}]))",
    "c_n": "sum by (function_name) (increase(quart_function_compute_seconds_count[{w}]))",
    "c_s": "sum by (function_name) (increase(quart_function_compute_seconds_sum[{w}]))",
    "c_q": "sum by (function_name) (increase(quart_function_compute_seconds_squares_sum[{w}]))",
}


_NAMES: dict[str, str] = {}  # function_name label -> bare name (a few thousand at most)


def _fold(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    names, isfinite = _NAMES, math.isfinite
    for row in rows:
        label = row.get("metric", {}).get("function_name", "")
        name = names.get(label)
        if name is None:
            name = strip_namespace(label)
            if len(names) < 100_000:
                names[label] = name
        try:
            v = float(row["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if name and isfinite(v):
            out[name] = out.get(name, 0.0) + v
    return out


def combine(raw: dict[str, dict[str, float]], counts: dict[str, list[float]] | None = None,
            min_arrivals: int = 30) -> dict[str, FunctionMetrics]:
    """Pure: per-query results (already folded by function) -> per-function metrics."""
    names = set().union(*(d.keys() for d in raw.values())) if raw else set()
    out = {}
    cols = [(k, raw.get(k) or {}) for k in QUERIES]
    for fn in sorted(names):
        g = {k: col.get(fn) for k, col in cols}
        lat = g["lat_sum"] / g["lat_count"] if g["lat_count"] and g["lat_sum"] is not None \
            else None
        cv: CvEstimate | None = None
        if g["ia_n"] is not None and g["ia_s"] is not None and g["ia_q"] is not None:
            cv = cv_from_moments(g["ia_n"], g["ia_s"], g["ia_q"], min_arrivals)
        if (cv is None or cv.cv is None) and counts and fn in counts:
            cv = cv_from_counts(counts[fn], min_arrivals)
        comp_mean = comp_cv = None
        if g["c_n"] and g["c_s"] is not None:
            comp_mean = g["c_s"] / g["c_n"]
            if g["c_q"] is not None and comp_mean > 0 and g["c_n"] >= 2:
                var = max(0.0, g["c_q"] / g["c_n"] - comp_mean**2)
                comp_cv = math.sqrt(var) / comp_mean
        p99 = g["p99"] if g["p99"] is not None and math.isfinite(g["p99"]) else None
        out[fn] = FunctionMetrics(
            arrival_rate=g["arrivals"], latency_mean_s=lat,
            latency_p99_s=p99 if lat is not None else None,
            queue_depth=g["queue"], inflight=g["inflight"], available_replicas=g["replicas"],
            arrival_cv=cv.cv if cv else None, arrival_cv_source=cv.source if cv else "none",
            compute_mean_s=comp_mean, compute_cv=comp_cv, completions=g["lat_count"] or 0.0)
    return out


class PrometheusReader:
    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        # no retries inside a control cycle: a down Prometheus must cost one timeout, not many
        self.prom = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s,
                                      retry=Retry(total=0, connect=0, read=0))

    def query(self, q: str) -> list[dict[str, Any]]:
        try:
            return self.prom.custom_query(q)
        except Exception as e:  # prometheus-api-client raises several types
            raise MetricsUnavailable(f"Prometheus query failed: {type(e).__name__}: {e}") from e

    def read(self, window_s: float) -> dict[str, FunctionMetrics]:
        w = f"{max(2, int(round(window_s)))}s"
        raw = {k: _fold(self.query(q.format(w=w))) for k, q in QUERIES.items()}
        counts = None
        if not raw["ia_n"] and raw["arrivals"]:  # a stock gateway: no moment counters
            counts = self._per_second_counts(window_s)
        return combine(raw, counts)

    def _per_second_counts(self, window_s: float) -> dict[str, list[float]]:
        end = time.time()
        try:
            res = self.prom.custom_query_range(
                "sum by (function_name) (gateway_function_invocation_started)",
                start_time=_dt(end - max(10.0, window_s)), end_time=_dt(end), step="1s")
        except Exception as e:
            raise MetricsUnavailable(f"Prometheus range query failed: {e}") from e
        out: dict[str, list[float]] = {}
        for row in res:
            vals = [float(v) for _, v in row.get("values", [])]
            diffs = [max(0.0, b - a) for a, b in zip(vals, vals[1:], strict=False)]
            out[strip_namespace(row["metric"].get("function_name", ""))] = diffs
        return out


def _dt(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)
