"""PromQL over the gateway's metrics, through prometheus-api-client.

``function_name`` is ``name.namespace`` on current gateways and plain ``name``
on older ones: every helper here accepts both and reports the bare name.
"""
from __future__ import annotations

import math

from prometheus_api_client import PrometheusConnect


def bare(function_name: str) -> str:
    return function_name.split(".", 1)[0]


class GatewayMetrics:
    def __init__(self, url: str):
        self.prom = PrometheusConnect(url=url, disable_ssl=True)

    def _by_function(self, query: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for row in self.prom.custom_query(query):
            name = bare(row["metric"].get("function_name", ""))
            val = float(row["value"][1])
            if name and not math.isnan(val):
                out[name] = out.get(name, 0.0) + val
        return out

    def invocations(self, code: str | None = None) -> dict[str, float]:
        sel = f'{{code="{code}"}}' if code else ""
        return self._by_function(f"sum by (function_name) (gateway_function_invocation_total{sel})")

    def rate(self, window: str = "1m") -> dict[str, float]:
        return self._by_function(
            f"sum(rate(gateway_function_invocation_total[{window}])) by (function_name)")

    def latency_quantile(self, q: float, window: str) -> dict[str, float]:
        return self._by_function(
            f"histogram_quantile({q}, sum by (le, function_name) "
            f"(increase(gateway_functions_seconds_bucket[{window}])))")

    def replicas(self) -> dict[str, float]:
        return self._by_function("max by (function_name) (gateway_service_count)")
