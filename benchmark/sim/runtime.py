"""Run-time objects of the simulation: a stage (function) with its gateway counters, a
request travelling down a pipeline, and a hop's CPU work.

Plain ``__slots__`` classes, not dataclasses: a run creates hundreds of thousands of
requests and touches these attributes on every event.
"""
from __future__ import annotations

import math
from collections import deque

from .cluster import Replica
from .dists import Draws
from .spec import StageSpec

__all__ = ["BUCKETS", "HopJob", "HostJob", "Request", "SpawnJob", "Stage"]

# the gateway's histogram buckets (local_provider/metrics.py, Prometheus' defaults)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)


class Stage:
    """One function at run time: its replicas, its queue and its gateway counters."""

    __slots__ = (
        "blocked",
        "buckets",
        "c_n",
        "c_q",
        "c_s",
        "cap",
        "codes",
        "cold_cpu",
        "cpu",
        "desired",
        "draw",
        "first_call_s",
        "handoff",
        "hop_delay",
        "hop_work",
        "host_work",
        "ia_last",
        "ia_n",
        "ia_q",
        "ia_s",
        "idx",
        "lat_n",
        "lat_s",
        "name",
        "next",
        "on_device",
        "pipe",
        "pos",
        "queue",
        "ready_n",
        "replicas",
        "rs_acc",
        "rs_t",
        "spawn",
        "spec",
        "started",
        "timer",
    )

    def __init__(self, idx: int, spec: StageSpec, pipe: int, pos: int, draw: Draws,
                 spawn: dict[str, Draws], first_call_s: float) -> None:
        self.idx, self.spec, self.name, self.pipe, self.pos = idx, spec, spec.name, pipe, pos
        self.next: Stage | None = None
        self.replicas: list[Replica] = []  # starting, ready and draining; never dead
        self.queue: deque[Request] = deque()
        self.desired = spec.replicas
        self.cpu = spec.cpu
        self.cap = min(float(spec.threads), spec.cpu if spec.cpu is not None else math.inf)
        self.draw, self.spawn, self.first_call_s = draw, spawn, first_call_s
        self.cold_cpu = 0.0  # core-seconds of a cold start on its node (SpawnProfile)
        self.hop_delay, self.hop_work = spec.hop_s, spec.hop_cpu_s  # Model may fold work in
        self.host_work, self.on_device, self.handoff = spec.host_cpu_s, spec.device, \
            spec.handoff_s
        self.ready_n = 0
        self.rs_acc = 0.0  # integral of ready replicas over time
        self.rs_t = 0.0
        self.timer = False  # a queue-timeout event is pending
        self.blocked = 0  # spawns that found no node
        self.started = 0
        self.ia_last = -1.0
        self.ia_n = self.ia_s = self.ia_q = 0.0
        self.c_n = self.c_s = self.c_q = 0.0
        self.lat_n = 0
        self.lat_s = 0.0
        self.buckets = [0] * len(BUCKETS)
        self.codes: dict[str, int] = {}

    def inflight(self) -> int:
        return sum(r.inflight for r in self.replicas)


class HopJob:
    """CPU work of one hop, processor-shared on the gateway's node (one thread: cap 1)."""

    __slots__ = ("cap", "fin", "req", "speed", "stage")

    def __init__(self, req: Request, stage: Stage) -> None:
        self.req, self.stage = req, stage
        self.cap, self.fin, self.speed = 1.0, 0.0, 0.0


class HostJob:
    """A replica's own CPU for one request (``StageSpec.host_cpu_s``), processor-shared on
    its node; one Python thread: at most one core."""

    __slots__ = ("cap", "fin", "replica", "req", "speed")

    def __init__(self, req: Request, replica: Replica) -> None:
        self.req, self.replica = req, replica
        self.cap, self.fin, self.speed = min(1.0, replica.cap), 0.0, 0.0


class SpawnJob:
    """The CPU a cold start burns on its node (one importing thread: at most one core),
    processor-shared with everything else there; ``rest_s`` of waiting follows."""

    __slots__ = ("cap", "fin", "replica", "rest_s", "speed")

    def __init__(self, replica: Replica, rest_s: float) -> None:
        self.replica, self.rest_s = replica, rest_s
        self.cap, self.fin, self.speed = 1.0, 0.0, 0.0


class Request:
    __slots__ = ("arr", "held", "i", "k", "lo", "p", "t0", "tc")

    def __init__(self, i: int, p: int, t0: float, n: int) -> None:
        self.i = i
        self.p = p  # pipeline index
        self.t0 = t0
        self.k = 0  # stage position it is at; -1 once finished
        self.arr = [0.0] * n  # arrival time at each stage's gateway
        self.held: list[Replica | None] = [None] * n
        self.tc = 0.0  # Server-Timing start at the current stage
        self.lo = 0  # lowest stage still connected to the client
