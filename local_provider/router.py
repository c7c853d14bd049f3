"""Per-function routing: least-in-flight replica choice and a bounded FIFO queue.

A call takes the ready replica with the fewest requests in flight, among those
below the function's per-replica concurrency (``max_inflight``).  When none
qualifies (all busy, or none ready yet) the call waits in a FIFO queue of
bounded size; only the head of the queue may take a freed replica, so waiting
is fair and a burst cannot starve an early request.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from local_provider.replicas import ReplicaHandle


class RouteError(Exception):
    status = 503
    reason = ""


class QueueFull(RouteError):
    status = 429
    reason = "queue_full"


class QueueTimeout(RouteError):
    status = 504
    reason = "timeout"


class FunctionGone(RouteError):
    status = 404
    reason = "deleted"


_ids = itertools.count(1)


@dataclass(eq=False)
class Replica:
    """One replica as the router sees it; ``handle`` is None while the launcher works."""

    index: int
    generation: int
    handle: ReplicaHandle | None = None
    ready: bool = False
    draining: bool = False
    dead: bool = False
    inflight: int = 0
    served: int = 0
    launched_at: float = field(default_factory=time.monotonic)
    uid: int = field(default_factory=lambda: next(_ids))
    # The last sign of life: a call finished, a call taken while idle, or a health probe
    # answered (local_provider/outliers.py).
    alive_at: float = field(default_factory=time.monotonic)

    def stalled_s(self, now: float) -> float:
        """How long its calls in flight have gone without any of them finishing."""
        return now - self.alive_at if self.inflight > 0 else 0.0

    @property
    def name(self) -> str:
        return f"#{self.index}"

    @property
    def routable(self) -> bool:
        return self.ready and not self.draining and not self.dead and self.handle is not None


class FunctionPool:
    """The replicas of one function and the requests waiting for them.

    All state is guarded by one lock (``cond``'s); replica lifecycle changes (ready,
    draining, dead) go through methods here so that waiters are woken.

    Each queued call waits on a condition of its own and only the head of the queue is
    woken when a slot may have freed (it wakes the next head when it leaves).  One shared
    condition woken with ``notify_all`` on every release made each release wake every
    queued thread to find it was not the head: with 250 queued, 250 wake-ups fighting
    for the GIL per finished call, so a CV 8 burst slowed the gateway it queued in.
    ``cond`` itself wakes only ``wait_idle`` (a draining replica's last call).
    """

    def __init__(self, name: str, max_inflight: int, queue_size: int) -> None:
        self.name = name
        self.max_inflight = max_inflight
        self.queue_size = queue_size
        self._lock = threading.RLock()
        self.cond = threading.Condition(self._lock)
        self.replicas: list[Replica] = []
        self._waiters: deque[threading.Condition] = deque()
        self.wakeups = 0  # queued calls woken (at most about one per slot freed)
        self._closed = False
        self.rejected = {"queue_full": 0, "timeout": 0}
        # recent gaps between a replica's signs of life while it had calls in flight
        self.gaps: deque[float] = deque(maxlen=256)
        self.ejections = 0

    # -- routing -------------------------------------------------------------

    def _pick(self) -> Replica | None:
        best: Replica | None = None
        for r in self.replicas:
            if (r.routable and r.inflight < self.max_inflight
                    and (best is None or r.inflight < best.inflight)):
                best = r
        return best

    def acquire(self, timeout_s: float) -> Replica:
        """Reserve a replica slot; raises QueueFull, QueueTimeout or FunctionGone."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            if self._closed:
                raise FunctionGone(f"function {self.name} was deleted")
            if not self._waiters:
                r = self._pick()
                if r is not None:
                    return self._take(r)
            if len(self._waiters) >= self.queue_size:
                self.rejected["queue_full"] += 1
                raise QueueFull(f"queue of function {self.name} is full "
                                f"({self.queue_size} waiting); retry later")
            token = threading.Condition(self._lock)
            self._waiters.append(token)
            queued = True
            try:
                while True:
                    if self._closed:
                        raise FunctionGone(f"function {self.name} was deleted")
                    if self._waiters[0] is token:
                        r = self._pick()
                        if r is not None:
                            self._waiters.popleft()
                            queued = False
                            self._kick()  # the next head may find another free slot
                            return self._take(r)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.rejected["timeout"] += 1
                        raise QueueTimeout(
                            f"no replica of {self.name} became free within {timeout_s:g}s "
                            f"(replicas ready: {self.ready_count()})")
                    token.wait(remaining)
                    self.wakeups += 1
            finally:
                if queued:
                    head = self._waiters[0] is token
                    self._waiters.remove(token)
                    if head:
                        self._kick()

    def _kick(self) -> None:
        """Wake the head of the queue (under the lock): a slot may be free for it."""
        if self._waiters:
            self._waiters[0].notify()

    def _take(self, r: Replica) -> Replica:
        now = time.monotonic()
        if r.inflight == 0:
            r.alive_at = now
        r.inflight += 1
        return r

    def release(self, r: Replica) -> None:
        with self.cond:
            now = time.monotonic()
            self.gaps.append(now - r.alive_at)
            r.alive_at = now
            r.inflight -= 1
            r.served += 1
            self._kick()
            if r.inflight == 0:
                self.cond.notify_all()  # wait_idle

    # -- lifecycle (called by the registry) ------------------------------------

    def add(self, r: Replica) -> None:
        with self.cond:
            self.replicas.append(r)

    def set_ready(self, r: Replica) -> None:
        with self.cond:
            r.ready = True
            self._kick()

    def set_draining(self, r: Replica) -> None:
        with self.cond:
            r.draining = True

    def set_dead(self, r: Replica) -> bool:
        """Mark a replica dead; True if this call did it (so the death is logged once)."""
        with self.cond:
            if r.dead:
                return False
            r.dead = True
            return True

    def remove(self, r: Replica) -> None:
        with self.cond:
            if r in self.replicas:
                self.replicas.remove(r)
            self._kick()
            self.cond.notify_all()

    def wait_idle(self, r: Replica, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while r.inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True

    def close(self) -> None:
        """The function is deleted: queued calls get FunctionGone."""
        with self.cond:
            self._closed = True
            for w in self._waiters:
                w.notify()
            self.cond.notify_all()

    def set_max_inflight(self, n: int) -> None:
        with self.cond:
            self.max_inflight = n
            self._kick()

    # -- observation -----------------------------------------------------------

    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.routable)

    def snapshot(self) -> dict[str, Any]:
        with self.cond:
            return {
                "inflight": sum(r.inflight for r in self.replicas),
                "queueDepth": len(self._waiters),
                "availableReplicas": self.ready_count(),
                "rejectedQueueFull": self.rejected["queue_full"],
                "rejectedTimeout": self.rejected["timeout"],
                "ejections": self.ejections,
                "instances": [{"index": r.index, "ready": r.ready, "inflight": r.inflight,
                               "served": r.served, "draining": r.draining or r.dead,
                               **({"pid": r.handle.pid, **r.handle.info} if r.handle else {})}
                              for r in self.replicas],
            }
