"""Plain data the policies read: what the control loop (or the simulator) observed.

Every metric is optional because Prometheus can be late, empty or down, and a
missing value must be told apart from a zero: a stage with no latency sample
is not a stage with zero latency (Knative's ``ScaleValid: false``).  The
policies hold, and never scale down, on what they cannot see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["PipelineObservation", "StageObservation", "topological_order"]


@dataclass(frozen=True)
class StageObservation:
    """One stage (one OpenFaaS function) over the last control period.

    ``service_time_s`` is the mean busy time per request of one replica
    (1/mu at the replica's current CPU limit), ``cpu_s_per_request`` the
    CPU-seconds a request burns, ``cpu_cores`` the current per-replica limit.
    """

    name: str
    replicas: int
    arrival_rate: float | None = None
    service_time_s: float | None = None
    service_cv: float | None = None
    latency_mean_s: float | None = None
    latency_p99_s: float | None = None
    queue_depth: float | None = None
    arrival_cv: float | None = None
    departure_cv: float | None = None
    cpu_cores: float | None = None
    cpu_s_per_request: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            raise TypeError(f"{self.name}: replicas must be an int, got {self.replicas!r}")
        if self.replicas < 0:
            raise ValueError(f"{self.name}: replicas must be >= 0, got {self.replicas}")
        d = self.__dict__
        for name in _METRICS:  # a tuple, not fields(): 1,000 stages are built every period
            value = d[name]
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.name}: {name} must be a finite number >= 0 or None")
        if self.service_time_s is not None and self.service_time_s <= 0:
            raise ValueError(f"{self.name}: service_time_s must be > 0")

    def latency(self, statistic: str) -> float | None:
        if statistic == "mean":
            return self.latency_mean_s
        if statistic == "p99":
            return self.latency_p99_s
        raise ValueError(f"latency statistic must be 'mean' or 'p99', got {statistic!r}")

    def utilisation(self) -> float | None:
        if self.arrival_rate is None or self.service_time_s is None or self.replicas == 0:
            return None
        return self.arrival_rate * self.service_time_s / self.replicas


_METRICS = tuple(f.name for f in fields(StageObservation) if f.name not in ("name", "replicas"))


@dataclass(frozen=True)
class PipelineObservation:
    """A pipeline's stages at time ``now_s`` (seconds on the caller's clock).

    ``edges`` are (upstream, downstream) stage names; ``None`` means a chain
    in the order of ``stages``, which is how a partitioned model runs.
    """

    name: str
    slo_s: float
    now_s: float
    stages: tuple[StageObservation, ...]
    edges: tuple[tuple[str, str], ...] | None = None
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.edges is not None:
            object.__setattr__(self, "edges", tuple((str(a), str(b)) for a, b in self.edges))
        if not self.stages:
            raise ValueError(f"{self.name}: a pipeline needs at least one stage")
        if not (math.isfinite(self.slo_s) and self.slo_s > 0):
            raise ValueError(f"{self.name}: slo_s must be a finite number > 0")
        if not math.isfinite(self.now_s):
            raise ValueError(f"{self.name}: now_s must be finite")
        index = {s.name: i for i, s in enumerate(self.stages)}
        if len(index) != len(self.stages):
            raise ValueError(f"{self.name}: stage names must be unique")
        object.__setattr__(self, "_index", index)
        topological_order(len(self.stages), self.edge_indices())  # raises on a cycle

    def edge_indices(self) -> list[tuple[int, int]]:
        if self.edges is None:
            return [(i, i + 1) for i in range(len(self.stages) - 1)]
        try:
            return [(self._index[a], self._index[b]) for a, b in self.edges]
        except KeyError as exc:
            raise ValueError(f"{self.name}: edge names unknown stage {exc.args[0]!r}") from None

    def upstream(self) -> list[list[int]]:
        ups: list[list[int]] = [[] for _ in self.stages]
        for a, b in self.edge_indices():
            ups[b].append(a)
        return ups

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineObservation:
        edges = data.get("edges")
        return cls(
            name=str(data["name"]),
            slo_s=float(data["slo_s"]),
            now_s=float(data["now_s"]),
            stages=tuple(StageObservation(**dict(s)) for s in data["stages"]),
            edges=None if edges is None else tuple((a, b) for a, b in edges),
        )


def topological_order(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Kahn's algorithm; a pipeline with a cycle is a configuration error."""
    indegree = [0] * n
    children: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        if a == b:
            raise ValueError("pipeline graph has a self-loop")
        children[a].append(b)
        indegree[b] += 1
    ready = [i for i in range(n) if indegree[i] == 0]
    order: list[int] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != n:
        raise ValueError("pipeline graph has a cycle")
    return order
