"""Nodes, replicas, processor-shared CPU and placement.

CPU: each replica computes one request at a time (the stage server holds a
lock around ``forward``), using at most ``cap = min(threads, limits.cpu)``
cores.  When the computing replicas of a node ask for more cores than it has,
they share them max-min fairly (water-filling: no one gets more than its cap,
the rest is split evenly), the discipline Linux CFS approximates for
runnable threads of equal weight (processor sharing; Kleinrock, *Queueing
Systems* Vol. 2, sec. 4.4).  ``NodeSpec.background`` adds always-runnable
threads of other programs to that sharing (each wanting one core): how a
shared validation machine is modelled.  Work is in core-seconds, so a request with 20 ms
of work takes 40 ms while two such requests share one core.

Each node keeps one pending "next completion" event: a change in the set of
computing replicas advances everyone's remaining work, recomputes the rates
and re-arms the event only when the earliest completion moved (a generation
counter turns stale events into no-ops).  On an undersubscribed node rates
never change, so a request costs one event, not one per change.

Placement of new replicas: ``cache-aware`` calls the plugin's own
``placement.place`` on a view of the nodes (as
``local_provider/nodes.py`` does for the local provider's simulated nodes);
``least-loaded`` takes the up node with the fewest replicas per core that
has the memory.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import simpy

from placement import Node as PNode
from placement import StageRequest, place

from .devices import Devices
from .spec import ClusterSpec

__all__ = ["Cluster", "Node", "Replica"]

GIB = 1 << 30
_TOL = 1e-9  # seconds: a job due this close to now is done (float residue)
_OTHERS = "\0others"  # placement view: replicas of all other stages, for the node's load


class Replica:
    """One replica of one stage; ``busy`` is the request it computes, ``lockq`` the ones
    holding a slot and waiting for the compute lock."""

    __slots__ = (
        "born_s",
        "busy",
        "cap",
        "dead",
        "draining",
        "fin",
        "fresh",
        "holders",
        "inflight",
        "lockq",
        "memory_gib",
        "node",
        "ready",
        "served",
        "speed",
        "stage",
        "tier",
        "uid",
    )

    def __init__(self, uid: int, stage: Any, node: Node, cap: float, born_s: float,
                 memory_gib: float, tier: str) -> None:
        self.uid = uid
        self.stage = stage
        self.node = node
        self.ready = False
        self.draining = False
        self.dead = False
        self.inflight = 0
        self.lockq: deque[Any] = deque()
        self.busy: Any = None
        self.cap = cap
        self.fin = 0.0
        self.speed = 0.0
        self.born_s = born_s
        self.fresh = True  # its first request pays the first-call cost
        self.memory_gib = memory_gib
        self.tier = tier
        self.served = 0
        self.holders: dict[Any, None] = {}  # requests holding a slot, in arrival order


class Node:
    __slots__ = (
        "_hold",
        "active",
        "bg",
        "cached",
        "cores",
        "counts",
        "demand",
        "dev",
        "env",
        "gen",
        "mem_gib",
        "mem_used",
        "name",
        "on_done",
        "replicas",
        "t_next",
        "up",
        "zbytes",
        "zygotes",
    )

    def __init__(self, name: str, cores: float, mem_gib: float, env: simpy.Environment,
                 on_done: Callable[[Replica], None]) -> None:
        self.name = name
        self.cores = cores
        self.mem_gib = mem_gib
        self.mem_used = 0.0
        self.up = True
        self.replicas: dict[int, Replica] = {}  # uid -> replica, insertion ordered
        self.counts: dict[str, int] = {}  # stage name -> live replicas here
        self.zygotes: dict[str, float] = {}  # stage name -> GiB of its warm zygote (fork)
        self.cached: dict[str, str] = {}  # the same as placement sees it: stage -> "T0"
        self.zbytes: dict[str, int] = {}
        self.active: list[Replica] = []
        self.demand = 0.0
        self.bg = 0.0  # always-runnable threads of other programs (NodeSpec.background)
        self.gen = 0
        self.t_next = -1.0
        self.env = env
        self.on_done = on_done
        self._hold = False
        self.dev: Devices | None = None  # emulated accelerators (NodeSpec.devices)

    # -- processor sharing ----------------------------------------------------
    # Each computing replica carries ``fin``, its completion time at the current rates.
    # Rates change only when the node is (or was) oversubscribed; then every job's
    # remaining work (fin - now) * old_rate is re-timed at its new rate.

    def start(self, r: Replica, work: float) -> None:
        now = self.env.now
        self.active.append(r)
        self.demand += r.cap
        if self.demand + self.bg <= self.cores + 1e-12:  # nobody else's rate changes
            r.speed = r.cap
            r.fin = now + work / r.cap
            if not self._hold and (self.t_next < 0.0 or r.fin < self.t_next):
                self._arm()
        else:
            r.speed = 1.0
            r.fin = now + work  # at rate 1 until _rates re-times it
            self._rates(now)
            if not self._hold:
                self._arm()

    def stop(self, r: Replica) -> None:
        """Take ``r``'s job off the CPU without completing it (the replica died)."""
        if r in self.active:
            self._remove(r)
            if not self._hold:
                self._arm()

    def set_background(self, threads: float) -> None:
        """Other programs' runnable threads changed (a replayed background trace)."""
        self.bg = threads
        if self.active:
            self._rates(self.env.now)
            if not self._hold:
                self._arm()

    def rerate(self) -> None:
        """Caps changed (a new ``limits.cpu``)."""
        self.demand = sum(r.cap for r in self.active)
        self._rates(self.env.now, force=True)
        self._arm()

    def _remove(self, r: Replica) -> None:
        self.active.remove(r)
        over = self.demand + self.bg > self.cores + 1e-12
        self.demand -= r.cap
        if not self.active:
            self.demand = 0.0  # no float residue carried over
        elif over:
            self._rates(self.env.now)

    def _rates(self, now: float, force: bool = False) -> None:
        act = self.active
        if self.demand + self.bg <= self.cores + 1e-12:
            level = math.inf
        else:  # water-filling: small caps are met in full, the rest share what is left
            items = sorted([(r.cap, 1.0) for r in act] + ([(1.0, self.bg)] if self.bg else []))
            left, n = self.cores, len(act) + self.bg
            level = left / n
            for c, w in items:
                if c >= level:
                    break
                left -= c * w
                n -= w
                level = left / n
        for r in act:
            v = min(level, r.cap)
            if v != r.speed or force:
                r.fin = now + (r.fin - now) * r.speed / v
                r.speed = v

    def _arm(self) -> None:
        if not self.active:
            self.t_next = -1.0
            return
        t = min(r.fin for r in self.active)
        if t == self.t_next:
            return
        self.gen += 1
        self.t_next = t
        ev = self.env.timeout(max(0.0, t - self.env.now), self.gen)
        ev.callbacks.append(self._fire)

    def _fire(self, ev: simpy.events.Event) -> None:
        if ev.value != self.gen or not self.active:
            return  # superseded by a later change
        now = self.env.now
        done = [r for r in self.active if r.fin <= now + _TOL]
        if not done:  # float residue: the job this event was armed for is done
            done = [min(self.active, key=lambda r: r.fin)]
        for r in done:
            self._remove(r)
        self.t_next = -1.0
        self._hold = True
        try:
            for r in done:
                self.on_done(r)
        finally:
            self._hold = False
        self._arm()

    # -- bookkeeping ---------------------------------------------------------

    def free_gib(self) -> float:
        return self.mem_gib - self.mem_used

    def evictable_gib(self) -> float:
        return sum(g for s, g in self.zygotes.items() if not self.counts.get(s))

    def add_zygote(self, stage: str, gib: float) -> None:
        self.zygotes[stage] = gib
        self.cached[stage] = "T0"
        self.zbytes[stage] = int(gib * GIB)
        self.mem_used += gib

    def drop_zygote(self, stage: str) -> None:
        self.mem_used -= self.zygotes.pop(stage)
        del self.cached[stage], self.zbytes[stage]

    def make_room(self, need_gib: float) -> None:
        """Evict warm zygotes without replicas (oldest first) until ``need_gib`` fits
        (keys_manager's memory threshold evicts unpinned stages the same way)."""
        for s in list(self.zygotes):
            if self.free_gib() >= need_gib:
                return
            if not self.counts.get(s):
                self.drop_zygote(s)


class Cluster:
    def __init__(self, spec: ClusterSpec, env: simpy.Environment,
                 on_done: Callable[[Replica], None]) -> None:
        self.nodes = [Node(n.name, float(n.cores), float(n.memory_gib), env, on_done)
                      for n in spec.nodes]
        for node, n in zip(self.nodes, spec.nodes, strict=True):
            node.bg = n.background_at(0.0)
            if n.devices:
                node.dev = Devices(n.devices, env, on_done)
        self.by_name = {n.name: n for n in self.nodes}
        self.placement = spec.placement
        self.mem_total = sum(n.mem_gib for n in self.nodes)

    def memory_util(self) -> float:
        up = [n for n in self.nodes if n.up]
        cap = sum(n.mem_gib for n in up)
        return sum(n.mem_used for n in up) / cap if cap else 0.0

    def choose(self, stage: str, need_gib: float, fork: bool, critical: bool = False
               ) -> Node | None:
        """A node for one new replica of ``stage`` (``need_gib`` if it holds no zygote)."""
        up = [n for n in self.nodes if n.up]
        if not up:
            return None
        if self.placement == "least-loaded":
            fits = [n for n in up if (fork and stage in n.zygotes)
                    or n.free_gib() + n.evictable_gib() >= need_gib]
            if not fits:
                return None
            return min(fits, key=lambda n: (sum(n.counts.values()) / n.cores, -n.free_gib()))
        view = [self._view(n) for n in up]
        [p] = place(view, [StageRequest(stage, add=1, critical=critical,
                                        bytes=int(need_gib * GIB))])
        return self.by_name[p.node] if p.node else None

    def victim(self, stage: str, ready: list[Replica]) -> Replica:
        """Which ready replica to stop: the placement policy's removal choice (cache-aware),
        else the provider's own order (idle, least busy, newest)."""
        if self.placement == "cache-aware" and len(ready) > 1:
            view = [self._view(n) for n in self.nodes]
            [p] = place(view, [StageRequest(stage, remove=1)])
            on = [r for r in ready if r.node.name == p.node]
            if on:
                return min(on, key=lambda r: (r.inflight, -r.uid))
        return min(ready, key=lambda r: (r.inflight, -r.uid))

    @staticmethod
    def _view(n: Node) -> PNode:
        # the node's own dicts, not copies: place() never mutates its input
        return PNode(n.name, int(n.mem_gib * GIB), int(n.mem_used * GIB), n.cores,
                     n.cached, n.zbytes, n.counts, up=n.up)
