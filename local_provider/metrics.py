"""Gateway metrics in Prometheus text format 0.0.4, with the upstream gateway's names.

Written by hand rather than with prometheus_client on purpose: the upstream
gateway exposes the counter ``gateway_function_invocation_started`` without a
``_total`` suffix, and prometheus_client appends ``_total`` to every counter
it renders.  Dashboards, alert rules (``gateway_function_invocation_total``)
and our autoscaler's PromQL must see exactly the upstream names, and the
format is small: HELP/TYPE lines, samples, escaped label values.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from local_provider.config import NAMESPACE

# prometheus_client's (and Go client's) default histogram buckets.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def format_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    f = float(v)
    # Like Go's strconv 'g' formatting used by the upstream gateway: le="1", not le="1.0".
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs) + "}"


def function_label(name: str, namespace: str = NAMESPACE) -> str:
    return f"{name}.{namespace}"


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(DEFAULT_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, v: float) -> None:
        for i, le in enumerate(DEFAULT_BUCKETS):
            if v <= le:
                self.buckets[i] += 1
        self.total += v
        self.count += 1


@dataclass(frozen=True)
class FunctionGauges:
    """Live figures of one function, read at scrape time from the provider."""

    available_replicas: int
    desired_replicas: int
    inflight: int
    queue_depth: int
    ejections: int = 0


class GatewayMetrics:
    """Counters the gateway updates per call; gauges come from a callback at scrape time."""

    def __init__(self, gauges: Callable[[], dict[str, FunctionGauges]] | None = None) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, int] = {}
        self._total: dict[tuple[str, str], int] = {}
        self._seconds: dict[tuple[str, str], _Histogram] = {}
        self._rejected: dict[tuple[str, str], int] = {}
        self._last_arrival: dict[str, float] = {}
        self._gaps: dict[str, list[float]] = {}  # function -> [count, sum, sum of squares]
        self._compute: dict[str, list[float]] = {}  # the same for own compute time
        self._gauges = gauges or (dict)
        self._clock = time.monotonic

    def started(self, function: str) -> None:
        now = self._clock()
        with self._lock:
            self._started[function] = self._started.get(function, 0) + 1
            last = self._last_arrival.get(function)
            self._last_arrival[function] = now
            if last is not None:  # inter-arrival moments: any window's CV comes from rate()
                dt = now - last
                m = self._gaps.setdefault(function, [0, 0.0, 0.0])
                m[0] += 1
                m[1] += dt
                m[2] += dt * dt

    def computed(self, function: str, seconds: float) -> None:
        """A replica's own compute time for one call (its first ``Server-Timing`` entry): the
        stage's service time, which the gateway latency (it includes downstream stages) hides."""
        with self._lock:
            m = self._compute.setdefault(function, [0, 0.0, 0.0])
            m[0] += 1
            m[1] += seconds
            m[2] += seconds * seconds

    def finished(self, function: str, code: int, seconds: float, rejected: str = "") -> None:
        key = (function, str(code))
        with self._lock:
            self._total[key] = self._total.get(key, 0) + 1
            self._seconds.setdefault(key, _Histogram()).observe(seconds)
            if rejected:
                rk = (function, rejected)
                self._rejected[rk] = self._rejected.get(rk, 0) + 1

    def render(self) -> str:
        with self._lock:
            started = sorted(self._started.items())
            total = sorted(self._total.items())
            seconds = sorted((k, _Histogram(list(h.buckets), h.total, h.count))
                             for k, h in self._seconds.items())
            rejected = sorted(self._rejected.items())
            gaps = sorted((k, tuple(v)) for k, v in self._gaps.items())
            compute = sorted((k, tuple(v)) for k, v in self._compute.items())
        gauges = sorted(self._gauges().items())
        out = _Exposition()
        _render_calls(out, started, total, seconds)
        _render_gauges(out, gauges, rejected)
        _render_moments(out, "interarrival", gaps, (
            ("count", "Inter-arrival gaps observed (requests after the first)"),
            ("sum", "Sum of the gaps between consecutive requests, in seconds"),
            ("squares_sum", "Sum of the squared gaps, in seconds^2: with _count and _sum "
                            "gives the arrival CV of any window through rate()")))
        _render_moments(out, "compute", compute, (
            ("count", "Calls that reported their own compute time (Server-Timing)"),
            ("sum", "Sum of the functions' own compute time per call, in seconds"),
            ("squares_sum", "Sum of squared compute times: the service-time CV")))
        return "\n".join(out.lines) + "\n"


class _Exposition:
    """Prometheus text exposition, written one family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: tuple[tuple[str, str], ...], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {format_value(value)}")


def _render_calls(out: _Exposition, started: list[tuple[str, int]],
                  total: list[tuple[tuple[str, str], int]],
                  seconds: list[tuple[tuple[str, str], _Histogram]]) -> None:
    """The upstream gateway's call families, with its names and help texts."""
    out.family("gateway_function_invocation_started", "counter",
               "The total number of function HTTP requests started.")
    for fn, n in started:
        out.sample("gateway_function_invocation_started", (("function_name", fn),), n)
    out.family("gateway_function_invocation_total", "counter",
               "Function metrics")
    for (fn, code), n in total:
        out.sample("gateway_function_invocation_total", (("function_name", fn), ("code", code)), n)
    out.family("gateway_functions_seconds", "histogram", "Function time taken")
    for (fn, code), h in seconds:
        base = (("function_name", fn), ("code", code))
        for le, n in zip(DEFAULT_BUCKETS, h.buckets):
            out.sample("gateway_functions_seconds_bucket", base + (("le", format_value(le)),), n)
        out.sample("gateway_functions_seconds_sum", base, h.total)
        out.sample("gateway_functions_seconds_count", base, h.count)


_GAUGES = (  # ours: (family, help, FunctionGauges field)
    ("quart_function_replicas_available",
     "Replicas of the function ready to serve (availableReplicas)", "available_replicas"),
    ("quart_function_inflight", "Requests being served by replicas of the function", "inflight"),
    ("quart_function_queue_depth",
     "Requests waiting in the function's queue for a free replica", "queue_depth"),
    ("quart_function_replicas_desired", "Desired replicas of the function", "desired_replicas"),
)


def _render_gauges(out: _Exposition, gauges: list[tuple[str, FunctionGauges]],
                   rejected: list[tuple[tuple[str, str], int]]) -> None:
    # Upstream's exporter sets this from the provider's function list: ``replicas``, the
    # desired count, not ``availableReplicas`` (gateway/metrics/exporter.go).
    out.family("gateway_service_count", "gauge", "Current count of replicas for function")
    for fn, g in gauges:
        out.sample("gateway_service_count", (("function_name", fn),), g.desired_replicas)
    for name, help_, attr in _GAUGES:
        out.family(name, "gauge", help_)
        for fn, g in gauges:
            out.sample(name, (("function_name", fn),), getattr(g, attr))
    out.family("quart_function_rejected_total", "counter",
               "Requests turned away by the function's queue (queue_full or timeout)")
    for (fn, reason), n in rejected:
        out.sample("quart_function_rejected_total", (("function_name", fn), ("reason", reason)), n)
    out.family("quart_replica_ejections_total", "counter",
               "Replicas taken out of routing and replaced for hanging (outliers.py)")
    for fn, g in gauges:
        out.sample("quart_replica_ejections_total", (("function_name", fn),), g.ejections)


def _render_moments(out: _Exposition, what: str, moments: list[tuple[str, tuple[float, ...]]],
                    families: tuple[tuple[str, str], ...]) -> None:
    """Count, sum and sum of squares per function as three counters: a CV through rate()."""
    for i, (suffix, help_) in enumerate(families):
        name = f"quart_function_{what}_seconds_{suffix}"
        out.family(name, "counter", help_)
        for fn, m in moments:
            out.sample(name, (("function_name", fn),), m[i])
