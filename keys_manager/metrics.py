"""keys_manager's Prometheus metrics.

Cache counters live in ``ParamCache`` (it is also used without an agent), so
they are read at scrape time by a collector instead of being mirrored; the
spawn latency is a histogram observed as spawns happen.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

SPAWN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


class _Agent(Protocol):
    """What the collector reads: ``KeysManager.status()``."""

    def status(self) -> dict[str, Any]: ...


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.spawn = Histogram(
            "quart_keys_spawn_seconds",
            "Time from a spawn request to a replica process holding its listening socket, "
            "by the tier that served it (T0 = forked from a warm zygote)",
            ["tier"], buckets=SPAWN_BUCKETS, registry=self.registry)
        self.agent: _Agent | None = None

    def observe_spawn(self, tier: str, seconds: float) -> None:
        self.spawn.labels(tier=tier).observe(seconds)

    def attach(self, agent: _Agent) -> None:
        self.agent = agent
        self.registry.register(_Collector(agent))


class _Collector:
    def __init__(self, agent: _Agent) -> None:
        self.agent = agent

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        st = self.agent.status()
        c = st["cache"]
        g = GaugeMetricFamily("quart_keys_cache_bytes", "Bytes resident per cache tier",
                              labels=["tier"])
        for tier, b in c["bytes"].items():
            g.add_metric([tier], b)
        yield g
        yield GaugeMetricFamily("quart_keys_cache_threshold_bytes",
                                "T1 budget (memory_threshold)", value=c["threshold_bytes"])
        for name, doc in (("hits", "Stage lookups served by a tier"),
                          ("misses", "Stage lookups a tier could not serve")):
            m = CounterMetricFamily(f"quart_keys_cache_{name}", doc, labels=["tier"])
            for tier, n in c[name].items():
                m.add_metric([tier], n)
            yield m
        yield CounterMetricFamily("quart_keys_cache_evictions", "Segments evicted from T1",
                                  value=c["evictions"])
        yield CounterMetricFamily("quart_keys_cache_corruptions",
                                  "Copies found corrupt or truncated and re-fetched",
                                  value=c["corruptions"])
        yield CounterMetricFamily("quart_keys_replicas_recycled",
                                  "Replicas stopped because their segment was rebuilt",
                                  value=st["recycled"])
        yield GaugeMetricFamily("quart_keys_zygotes_alive", "Warm zygotes alive",
                                value=sum(1 for z in st["zygotes"] if z["alive"]))
        r = GaugeMetricFamily("quart_keys_replicas", "Replicas alive per function",
                              labels=["function_name"])
        per: dict[str, int] = {}
        for rep in st["replicas"]:
            if rep["alive"]:
                per[rep["function"]] = per.get(rep["function"], 0) + 1
        for fn, n in sorted(per.items()):
            r.add_metric([fn], n)
        yield r
        p = GaugeMetricFamily("quart_keys_pinned", "Running replicas pinning a T1 stage",
                              labels=["stage"])
        for stage, n in c["pinned"].items():
            p.add_metric([stage], n)
        yield p
