"""A worker node in the simpy model: one executor, a FIFO queue, an LRU model cache.

One executor per node because a model server on one accelerator (or, as
measured here, one torch thread per replica) runs one forward pass at a time;
a request that finds its model missing pays the cold load inline, ahead of
everything queued behind it, which is exactly why a scheduler should not
cold-start on a busy node.  Memory holds whole models; loading one evicts the
least recently used ones until it fits, skipping models that requests already
in the queue will need when any other victim exists (evicting those would
only buy a second load; Belady's "keep what is needed next", MIN, 1966,
restricted to what the queue tells).  A failed node loses its queue, its request in
service and its cache at once (a crash, not a drain).

The node's *backlog* is the scheduler-facing estimate: expected seconds until
a request queued now would start, from mean service and load times (a
scheduler knows the means, not the draws).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from benchmark.studies.sched.decide import NodeView
from benchmark.studies.sched.models import ModelSpec

__all__ = ["Job", "WorkerNode"]


def _evict_for(cache: OrderedDict[str, float], size_mib: float, memory_mib: float,
               needed: Counter[str]) -> int:
    """LRU eviction until ``size_mib`` fits, sparing models queued requests still need
    while any other victim exists.  Returns how many models went."""
    gone = 0
    while cache and sum(cache.values()) + size_mib > memory_mib:
        victim = next((m for m in cache if needed[m] <= 0), next(iter(cache)))
        del cache[victim]
        gone += 1
    return gone


@dataclass(frozen=True)
class _Summary:
    tail_s: float                 # expected work queued behind the request in service
    warm: tuple[str, ...]         # resident once the queue has drained, sorted
    cached: tuple[str, ...]       # the same, least recently used first
    used_after_mib: float
    queue_len: int
    used_now_mib: float


@dataclass(eq=False)
class Job:
    """One request on its way through the cluster (mutable: the sim fills it in)."""

    rid: int
    model: str
    arrival_s: float
    factor: float                 # service-time multiplier (mean 1)
    tokens: int                   # decoder: tokens to generate
    action: str = ""              # the decision that placed it
    migrated: bool = False
    node: str = ""
    start_s: float = math.nan
    ttft_s: float = math.nan      # absolute time of the first token
    end_s: float = math.nan
    failed: bool = False


class WorkerNode:
    def __init__(self, env: simpy.Environment, name: str, memory_mib: float,
                 specs: dict[str, ModelSpec], load_rng: np.random.Generator,
                 on_done: Callable[[Job, WorkerNode], None],
                 load_sigma: float = 0.05) -> None:
        self.env, self.name, self.memory_mib, self.specs = env, name, memory_mib, specs
        self.cache: OrderedDict[str, float] = OrderedDict()  # model -> MiB, LRU first
        self.queue: deque[Job] = deque()
        self.incoming: list[Job] = []  # dispatched here, still on the wire
        self.current: Job | None = None
        self.loading: str | None = None
        self.expected_end_s = 0.0
        self.up = True
        self.loads = 0
        self.evictions = 0
        self._rng, self._sigma, self._on_done = load_rng, load_sigma, on_done
        self._wake: simpy.Event | None = None
        self._sum: _Summary | None = None
        self._proc = env.process(self._work())

    # --- what a scheduler can read -----------------------------------------------------
    # A scheduler placing a request at the tail needs the node as it will be when that
    # request starts: the summary replays the queue through the cache with the executor's
    # own eviction rule.  "Warm" is then what will still be resident, not everything that
    # is or will be loaded at some point: a model a queued load will evict is not warm,
    # and deciding as if it were makes a queue reload models in turn for ever (the
    # in-queue thrash of a FIFO executor).  Requests on the wire count as queued: whoever
    # sent them knows they are coming.  Rebuilt only after the node changed.
    def _summary(self) -> _Summary:
        if self._sum is None:
            ahead = [*self.queue, *self.incoming]
            sim: OrderedDict[str, float] = OrderedDict(self.cache)
            if self.loading:
                sim[self.loading] = self.specs[self.loading].size_mib
            if self.current is not None and self.current.model in sim:
                sim.move_to_end(self.current.model)
            needed = Counter(j.model for j in ahead)
            tail = 0.0
            for j in ahead:
                spec = self.specs[j.model]
                needed[j.model] -= 1
                if j.model in sim:
                    sim.move_to_end(j.model)
                else:
                    _evict_for(sim, spec.size_mib, self.memory_mib, needed)
                    sim[j.model] = spec.size_mib
                    tail += spec.load_s
                tail += spec.mean_serve_s
            extra = self.specs[self.loading].size_mib if self.loading else 0.0
            self._sum = _Summary(tail, tuple(sorted(sim)), tuple(sim), sum(sim.values()),
                                 len(ahead) + (self.current is not None),
                                 sum(self.cache.values()) + extra)
        return self._sum

    def _changed(self) -> None:
        self._sum = None

    def warm(self) -> tuple[str, ...]:
        return self._summary().warm

    def queue_len(self) -> int:
        return self._summary().queue_len

    def used_mib(self) -> float:
        """Memory in use now (loaded models and the one being loaded)."""
        return self._summary().used_now_mib

    def backlog_s(self) -> float:
        now = max(0.0, self.expected_end_s - self.env.now) if self.current is not None else 0.0
        return now + self._summary().tail_s

    def view(self, alive: bool = True) -> NodeView:
        s = self._summary()
        return NodeView(self.name, self.backlog_s(), s.queue_len, s.warm, self.memory_mib,
                        s.used_after_mib, alive and self.up, cached=s.cached)

    def preload(self, model: str) -> None:
        """Put a model in the cache before the run starts (pre-warming)."""
        self.cache[model] = self.specs[model].size_mib
        self._changed()

    # --- what the cluster does to it -----------------------------------------------------
    def expect(self, job: Job) -> None:
        """A scheduler has sent ``job`` here; it arrives with :meth:`submit`."""
        self.incoming.append(job)
        self._changed()

    def submit(self, job: Job) -> None:
        if not self.up:
            raise RuntimeError(f"{self.name} is down")
        if job in self.incoming:
            self.incoming.remove(job)
        job.node = self.name
        self.queue.append(job)
        self._changed()
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def take_queued(self, job: Job) -> bool:
        """Remove a job that has not started (a central rebalance); False if it already has."""
        try:
            self.queue.remove(job)
        except ValueError:
            return False
        self._changed()
        return True

    def fail(self) -> list[Job]:
        """Crash: everything queued or in service is lost, and so is the cache."""
        if not self.up:
            return []
        self.up = False
        lost = ([self.current] if self.current is not None else []) + list(self.queue)
        self.queue.clear()
        self.incoming.clear()  # their senders find out when they cannot connect
        self.current, self.loading = None, None
        self.cache.clear()
        self._changed()
        self._proc.interrupt("node failure")
        return lost

    # --- the executor ------------------------------------------------------------------
    def _make_room(self, spec: ModelSpec) -> None:
        gone = _evict_for(self.cache, spec.size_mib, self.memory_mib,
                          Counter(j.model for j in self.queue))
        if gone:
            self.evictions += gone
            self._changed()

    def _jitter(self) -> float:
        return float(np.exp(self._rng.normal(-self._sigma ** 2 / 2, self._sigma)))

    def _work(self):
        env = self.env
        try:
            while True:
                if not self.queue:
                    self._wake = env.event()
                    yield self._wake
                    self._wake = None
                    continue
                job = self.current = self.queue.popleft()
                spec = self.specs[job.model]
                if job.model in self.cache:
                    self.cache.move_to_end(job.model)
                    self._changed()
                else:
                    self._make_room(spec)
                    self.loading = job.model
                    self.expected_end_s = env.now + spec.load_s + spec.mean_serve_s
                    self._changed()
                    yield env.timeout(spec.load_s * self._jitter())
                    self.loading = None
                    self.cache[job.model] = spec.size_mib
                    self.loads += 1
                    self._changed()
                self.expected_end_s = env.now + spec.mean_serve_s
                job.start_s = env.now
                first, total = spec.service(job.factor, job.tokens)
                yield env.timeout(first)
                job.ttft_s = env.now
                if total > first:
                    yield env.timeout(total - first)
                job.end_s = env.now
                self.current = None
                self._changed()
                self._on_done(job, self)
        except simpy.Interrupt:
            return
