"""What the simulator is asked to run: pipelines of stages, a cluster, failures, knobs.

Plain frozen dataclasses, validated on construction, so a typo in an
experiment is a ``ValueError`` naming the field, not a silent wrong figure.
Defaults follow the local provider (``local_provider/config.py``: queue of
256 per function, 30 s queue timeout, 32 replicas at most, 0.25 s reconcile,
5 s drain) and the template (``max_inflight`` 8 waitress threads per
replica, one torch thread), so the simulated gateway turns requests away
exactly where the live one does.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway_plugin.policies.observation import topological_order

__all__ = ["ClusterSpec", "Failure", "NodeSpec", "PipelineSpec", "SimConfig", "StageSpec",
           "parse_failures"]

DISTRIBUTIONS = ("lognormal", "gamma", "exponential", "deterministic")
SCALEUP = ("fork", "cold")
PLACEMENTS = ("cache-aware", "least-loaded")


def _pos(owner: str, name: str, value: float, zero_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{owner}: {name} must be a finite number {'>=' if zero_ok else '>'} 0, "
                         f"got {value!r}")


def _count(owner: str, name: str, value: int, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{owner}: {name} must be an int >= {lo}, got {value!r}")


@dataclass(frozen=True)
class StageSpec:
    """One function of a pipeline.

    ``service_mean_s``/``service_cv`` describe the compute time of one request
    on one free core (what ``Server-Timing`` reports on an idle replica);
    ``threads`` is how many cores one request can use at most (torch intra-op
    threads, 1 in the template).  ``memory_gib`` is the stage's weights plus
    runtime: a cold replica holds all of it, a forked replica shares the
    zygote's copy and adds only ``fork_overhead_gib`` (its PSS, measured by
    ``benchmark.studies.scaleup``).  Reaching the stage costs ``hop_s`` of delay plus
    ``hop_cpu_s`` core-seconds of the gateway's CPU (proxying), paid before it
    queues: on ``SimConfig.gateway_node``, one hop at a time (the embedded
    gateway is one Python process), when one is named, else as plain delay.
    ``spawn`` names a spawn-latency profile in :mod:`benchmark.sim.calibration`.
    ``dist`` defaults to deterministic without a CV and lognormal with one.

    ``device`` makes the service time *device* time (an emulated accelerator,
    ``functions/stage/emulated.py``): the replica holds its compute lock and then one of
    its node's devices (``NodeSpec.devices``) for the drawn time, asleep, using no CPU,
    so host contention does not stretch it; ``Server-Timing`` counts only the time the
    device is held.  ``host_cpu_s`` is the replica's own CPU per request (parsing, the
    activation codec, HTTP), processor-shared on its node before the compute lock.
    ``handoff_s`` is the delay between two back-to-back computations of one replica:
    the waiting thread must wake and win its process's GIL from the thread that just
    finished (which goes on encoding and forwarding); measured at saturation.
    ``late_p``/``late_s``: with probability ``late_p`` a device hold lasts one of the
    ``late_s`` seconds longer (sampled evenly): the sleeping thread woke late because
    the host was busy; measured under load.
    """

    name: str
    service_mean_s: float
    service_cv: float = 0.0
    dist: str | None = None
    memory_gib: float = 0.5
    fork_overhead_gib: float = 0.0108
    max_inflight: int = 8
    threads: int = 1
    cpu: float | None = None
    replicas: int = 1
    hop_s: float = 0.0
    hop_cpu_s: float = 0.0
    spawn: str = "minilm"
    device: bool = False
    host_cpu_s: float = 0.0
    handoff_s: float = 0.0
    late_p: float = 0.0
    late_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"stage name must be a non-empty string, got {self.name!r}")
        o = f"stage {self.name}"
        _pos(o, "service_mean_s", self.service_mean_s)
        _pos(o, "service_cv", self.service_cv, zero_ok=True)
        if self.dist is None:  # a constant without a CV, lognormal with one
            object.__setattr__(self, "dist",
                               "deterministic" if self.service_cv == 0 else "lognormal")
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"{o}: dist must be one of {DISTRIBUTIONS}, got {self.dist!r}")
        if self.dist == "deterministic" and self.service_cv != 0:
            raise ValueError(f"{o}: a deterministic service time has service_cv 0")
        if self.dist == "exponential" and self.service_cv not in (0, 1):
            raise ValueError(f"{o}: an exponential service time has service_cv 1")
        if self.dist in ("lognormal", "gamma") and self.service_cv == 0:
            raise ValueError(f"{o}: dist {self.dist} needs service_cv > 0 "
                             "(use dist='deterministic' for a constant)")
        _pos(o, "memory_gib", self.memory_gib, zero_ok=True)
        _pos(o, "fork_overhead_gib", self.fork_overhead_gib, zero_ok=True)
        _count(o, "max_inflight", self.max_inflight, 1)
        _count(o, "threads", self.threads, 1)
        if self.cpu is not None:
            _pos(o, "cpu", self.cpu)
        _count(o, "replicas", self.replicas, 0)
        _pos(o, "hop_s", self.hop_s, zero_ok=True)
        _pos(o, "hop_cpu_s", self.hop_cpu_s, zero_ok=True)
        _pos(o, "host_cpu_s", self.host_cpu_s, zero_ok=True)
        _pos(o, "handoff_s", self.handoff_s, zero_ok=True)
        object.__setattr__(self, "late_s", tuple(float(x) for x in self.late_s))
        if not 0 <= self.late_p <= 1 or (self.late_p > 0 and not self.late_s):
            raise ValueError(f"{o}: late_p must be in [0, 1], with late_s to sample from")
        for x in self.late_s:
            _pos(o, "late_s", x, zero_ok=True)
        if not isinstance(self.device, bool):
            raise TypeError(f"{o}: device must be a bool, got {self.device!r}")

    @property
    def cv(self) -> float:
        return 1.0 if self.dist == "exponential" else self.service_cv


@dataclass(frozen=True)
class PipelineSpec:
    """A chain of stages; a request enters ``stages[0]`` and the last stage answers.

    ``edges`` may reorder the chain (as ``PipelineObservation.edges`` does) but
    must form one path: a stage forwards to exactly one next function, which
    is what the stage server does (``QUART_NEXT_FUNCTION``).
    """

    name: str
    stages: tuple[StageSpec, ...]
    slo_s: float
    edges: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"pipeline name must be a non-empty string, got {self.name!r}")
        if not self.stages:
            raise ValueError(f"pipeline {self.name}: needs at least one stage")
        if not all(isinstance(s, StageSpec) for s in self.stages):
            raise TypeError(f"pipeline {self.name}: stages must be StageSpec")
        _pos(f"pipeline {self.name}", "slo_s", self.slo_s)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name}: stage names must be unique")
        if self.edges is not None:
            object.__setattr__(self, "edges", tuple((str(a), str(b)) for a, b in self.edges))
            object.__setattr__(self, "stages", self._chain_order())

    def _chain_order(self) -> tuple[StageSpec, ...]:
        index = {s.name: i for i, s in enumerate(self.stages)}
        try:
            pairs = [(index[a], index[b]) for a, b in self.edges or ()]
        except KeyError as e:
            raise ValueError(f"pipeline {self.name}: edge names unknown stage {e.args[0]!r}") \
                from None
        order = topological_order(len(self.stages), pairs)
        chain = {(order[i], order[i + 1]) for i in range(len(order) - 1)}
        if set(pairs) != chain:
            raise ValueError(f"pipeline {self.name}: edges must form a single chain "
                             "(each stage forwards to one next stage)")
        return tuple(self.stages[i] for i in order)


@dataclass(frozen=True)
class NodeSpec:
    """A node; ``background`` is the number of runnable threads of *other* programs that
    share its cores with the replicas: 0 on a dedicated node, a constant, or a step
    function ``((t_s, threads), ...)`` replayed over the run (measured on a shared
    machine by ``benchmark.sim.background``).  ``devices`` is the node's emulated
    accelerators (``QUART_EMU_DEVICES``), shared by its replicas of ``device`` stages."""

    name: str
    memory_gib: float
    cores: float
    background: float | tuple[tuple[float, float], ...] = 0.0
    devices: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"node name must be a non-empty string, got {self.name!r}")
        o = f"node {self.name}"
        _pos(o, "memory_gib", self.memory_gib)
        _pos(o, "cores", self.cores)
        _count(o, "devices", self.devices, 0)
        if isinstance(self.background, (int, float)):
            _pos(o, "background", self.background, zero_ok=True)
            return
        steps = tuple((float(t), float(v)) for t, v in self.background)
        if not steps or any(b[0] <= a[0] for a, b in itertools.pairwise(steps)):
            raise ValueError(f"{o}: a background trace needs increasing times")
        for t, v in steps:
            _pos(o, "background time", t, zero_ok=True)
            _pos(o, "background", v, zero_ok=True)
        object.__setattr__(self, "background", steps)

    def background_at(self, t_s: float) -> float:
        if isinstance(self.background, (int, float)):
            return float(self.background)
        level = 0.0
        for t, v in self.background:
            if t > t_s:
                break
            level = v
        return level


@dataclass(frozen=True)
class ClusterSpec:
    """Nodes and how new replicas are placed on them.

    ``cache-aware`` is the provider's own ``placement.place``
    (warm zygote first, KL-dispersed, memory-checked); ``least-loaded`` puts
    a replica on the up node with the most free memory that fits it, fewest
    replicas first (what a Kubernetes scheduler scoring LeastAllocated does).
    """

    nodes: tuple[NodeSpec, ...]
    placement: str = "cache-aware"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise ValueError("a cluster needs at least one node")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")

    @classmethod
    def uniform(cls, n: int, memory_gib: float, cores: float,
                placement: str = "cache-aware",
                background: float | tuple[tuple[float, float], ...] = 0.0,
                devices: int = 0) -> ClusterSpec:
        _count("cluster", "n", n, 1)
        return cls(tuple(NodeSpec(f"node-{i}", memory_gib, cores, background, devices)
                         for i in range(n)), placement)


@dataclass(frozen=True)
class Failure:
    """Kill a node (by name) or one replica of a stage (by stage name) at ``t_s``.

    ``target=None`` picks the worst case when the failure happens: the up node
    holding the most replicas, or a replica of the stage with the most calls
    in flight (ties: the first in cluster / pipeline order).
    """

    t_s: float
    kind: str
    target: str | None = None

    def __post_init__(self) -> None:
        _pos("failure", "t_s", self.t_s, zero_ok=True)
        if self.kind not in ("node", "replica"):
            raise ValueError(f"failure kind must be 'node' or 'replica', got {self.kind!r}")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise ValueError("failure target must be a node or stage name (or None)")


def parse_failures(items: Iterable[Failure | Sequence[object] | str] | None) -> tuple[Failure, ...]:
    """Accept ``Failure``, ``(t, kind[, name])`` tuples or ``"t:kind[:name]"`` strings."""
    out = []
    for item in items or ():
        if isinstance(item, Failure):
            out.append(item)
            continue
        parts: Sequence[object] = item.split(":", 2) if isinstance(item, str) else item
        if len(parts) not in (2, 3):
            raise ValueError(f"failure {item!r}: expected (t, 'node'|'replica'[, name])")
        try:
            t = float(parts[0])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"failure {item!r}: time {parts[0]!r} is not a number") from None
        name = parts[2] if len(parts) == 3 else None
        out.append(Failure(t, str(parts[1]), None if name in (None, "") else str(name)))
    return tuple(sorted(out, key=lambda f: f.t_s))


@dataclass(frozen=True)
class SimConfig:
    """Metrics pipeline and provider knobs.

    ``scrape_s`` is Prometheus' scrape interval (5 s by default; the local
    deploy, ``local_provider/deploy.py``, scrapes every 1 s, and validation uses
    that).  ``rate_window_s`` is the ``[w]`` of every ``rate()``; ``None``
    uses the plugin's own choice, ``max(2 * period_s, 4)``
    (``gateway_plugin/controller.py``).  ``recovery_window_s`` is the
    rolling window of the recovery-time p99.  ``gateway_node`` names the node whose
    cores the gateway shares (one machine: the only node); ``None`` (a gateway of its
    own) turns each stage's ``hop_cpu_s`` into delay.  ``timeline_s`` samples the
    timeline every so many seconds from 0 (as ``benchmark.live``'s sampler does) instead
    of once per control period.  ``client_slots`` bounds the requests the load generator
    has outstanding (``benchmark/openloop.py``'s worker threads, each holding its request
    until the answer): a request due while all are busy waits in the client, its latency
    still counted from its planned time; ``None`` is a client without a bound.
    """

    scrape_s: float = 5.0
    rate_window_s: float | None = None
    queue_size: int = 256
    queue_timeout_s: float = 30.0
    max_replicas: int = 32
    reconcile_s: float = 0.25
    drain_timeout_s: float = 5.0
    recovery_window_s: float = 10.0
    drain_horizon_s: float = 120.0
    timeline: bool = True
    gateway_node: str | None = None
    timeline_s: float | None = None
    client_slots: int | None = None

    def __post_init__(self) -> None:
        if self.client_slots is not None:
            _count("sim config", "client_slots", self.client_slots, 1)
        if self.timeline_s is not None:
            _pos("sim config", "timeline_s", self.timeline_s)
        for name in ("scrape_s", "queue_timeout_s", "recovery_window_s"):
            _pos("sim config", name, getattr(self, name))
        for name in ("reconcile_s", "drain_timeout_s", "drain_horizon_s"):
            _pos("sim config", name, getattr(self, name), zero_ok=True)
        if self.rate_window_s is not None:
            _pos("sim config", "rate_window_s", self.rate_window_s)
        _count("sim config", "queue_size", self.queue_size, 0)
        _count("sim config", "max_replicas", self.max_replicas, 1)
