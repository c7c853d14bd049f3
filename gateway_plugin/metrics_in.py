"""What the plugin reads from Prometheus, per function, over one window.

One PromQL query per quantity for *all* functions (grouped by
``function_name``), so a cycle costs a fixed number of queries whatever the
number of stages.  ``function_name`` may carry the ``.namespace`` suffix or
not; both are folded onto the bare name.

Missing is not zero: a function without samples gets ``None`` fields, and
``MetricsUnavailable`` means Prometheus itself did not answer — the control
loop then holds its last decision instead of acting on nothing.

A rate needs two samples in its window: a window shorter than two scrape
intervals (QUART_CONTROL_PERIOD_S=1 against the OpenFaaS chart's 5 s scrape)
would read no rates at all, silently.  So the window is widened to twice the
longest scrape interval in Prometheus' loaded configuration
(``/api/v1/status/config``: known at once, where the targets list fills only after
discovery; asked every few minutes), and the widening is logged once.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import requests
import yaml
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from gateway_plugin.arrivals import CvEstimate, cv_from_counts, cv_from_moments, strip_namespace

log = logging.getLogger("quart.plugin.metrics")
SCRAPE_INTERVAL_MAX_AGE_S = 300.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
           "y": 31536000.0}


class MetricsUnavailable(RuntimeError):
    pass


def duration_s(text: str) -> float:
    """A Prometheus duration ("5s", "1m30s", "500ms") in seconds; ValueError otherwise."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


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
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self._scrape: tuple[float, float | None] | None = None  # (asked at, interval)
        self._widened = False
        self.last_window_s = 0.0

    def query(self, q: str) -> list[dict[str, Any]]:
        try:
            return self.prom.custom_query(q)
        except Exception as e:  # prometheus-api-client raises several types
            raise MetricsUnavailable(f"Prometheus query failed: {type(e).__name__}: {e}") from e

    def scrape_interval_s(self) -> float | None:
        """The longest scrape interval of the configured jobs; None when Prometheus does not
        say (then the window is left as asked)."""
        now = time.monotonic()
        if self._scrape is not None:
            asked, known = self._scrape  # not known (Prometheus down?): asked again sooner
            if now - asked < (SCRAPE_INTERVAL_MAX_AGE_S if known else 30.0):
                return known
        try:
            r = requests.get(f"{self.url}/api/v1/status/config", timeout=self.timeout_s)
            cfg = yaml.safe_load(r.json()["data"]["yaml"])
            found = [duration_s(str(j["scrape_interval"]))
                     for j in cfg.get("scrape_configs") or [] if j.get("scrape_interval")]
            interval = max(found) if found else None
        except (requests.RequestException, yaml.YAMLError, ValueError, KeyError, TypeError,
                AttributeError):
            interval = None
        self._scrape = (now, interval)
        return interval

    def read(self, window_s: float) -> dict[str, FunctionMetrics]:
        scrape = self.scrape_interval_s()
        if scrape is not None and window_s < 2 * scrape:
            if not self._widened:
                log.warning("rate window %.3gs holds fewer than two scrapes (every %.3gs): "
                            "reading over %.3gs instead", window_s, scrape, 2 * scrape)
                self._widened = True
            window_s = 2 * scrape
        self.last_window_s = window_s
        w = f"{max(2, int(math.ceil(window_s)))}s"
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
