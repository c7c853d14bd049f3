"""A node's emulated accelerators, as ``functions/stage/device.py`` runs them on the rig.

Why a model of its own: on the rig a replica's forward pass sleeps on a device instead
of computing, so capacity is devices, not cores; when a node has more replicas than
devices they share them, and a request then waits for its *own* device even if another
one is idle.  Processor sharing cannot express that.

Binding (``DevicePool.bind``): a replica binds when it first computes to the first free
slot in the order (level 0, device 0..N-1), (level 1, device 0..N-1), ...; the slot is
freed when the replica is gone, so a later replica may land on a device that still has
replicas bound at higher levels.  A replica bound above level 0 checks at most once per
``REBALANCE_S`` (at a request) whether some device has at least two fewer replicas than
its own, and moves there (the first free slot on that device).

Serving: one request at a time per device, waiters served in arrival order (the rig's
``fcntl`` waiters are woken by the kernel; with a handful per device FIFO is close).
The replica's compute lock is taken first (``Model``), so a replica waits here with at
most one request.  A replica that dies frees its device at once (the kernel drops its
record locks).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import simpy

__all__ = ["REBALANCE_S", "Devices"]

REBALANCE_S = 1.0  # functions/stage/device.py


class Devices:
    """``n`` devices of one node; ``on_done(replica)`` when a replica's request is done."""

    __slots__ = ("busy", "checked", "env", "n", "of", "on_done", "slots", "wait")

    def __init__(self, n: int, env: simpy.Environment, on_done: Callable[[Any], None]) -> None:
        self.n = n
        self.env = env
        self.on_done = on_done
        self.slots: dict[tuple[int, int], int] = {}  # (level, device) -> replica uid
        self.of: dict[int, tuple[int, int]] = {}  # replica uid -> its slot
        self.checked: dict[int, float] = {}  # replica uid -> last rebalance check
        self.busy: list[Any] = [None] * n  # the replica holding each device
        self.wait: list[deque[tuple[Any, float]]] = [deque() for _ in range(n)]

    def occupancy(self) -> list[int]:
        occ = [0] * self.n
        for _level, k in self.slots:
            occ[k] += 1
        return occ

    def _first_free(self, only: int | None = None) -> tuple[int, int]:
        level = 0
        while True:
            for k in range(self.n) if only is None else (only,):
                if (level, k) not in self.slots:
                    return level, k
            level += 1

    def _take(self, uid: int, slot: tuple[int, int]) -> None:
        self.slots[slot] = uid
        self.of[uid] = slot

    def bind(self, uid: int) -> int:
        """The device replica ``uid`` runs on now (binding or rebalancing when due)."""
        now = self.env.now
        slot = self.of.get(uid)
        if slot is None:
            self._take(uid, self._first_free())
            self.checked[uid] = now
        elif slot[0] > 0 and now - self.checked[uid] >= REBALANCE_S:
            self.checked[uid] = now
            occ = self.occupancy()
            target = min(range(self.n), key=lambda j: occ[j])
            if occ[target] + 2 <= occ[slot[1]]:
                del self.slots[slot]
                self._take(uid, self._first_free(only=target))
        return self.of[uid][1]

    def start(self, r: Any, work: float) -> None:
        """Replica ``r`` (holding its compute lock, ``r.busy`` its request) wants its device
        for ``work`` seconds."""
        k = self.bind(r.uid)
        if self.busy[k] is None:
            self._run(k, r, work)
        else:
            self.wait[k].append((r, work))

    def _run(self, k: int, r: Any, work: float) -> None:
        self.busy[k] = r
        r.busy.tc = self.env.now  # Server-Timing: only the time the device is held
        ev = self.env.timeout(work, (k, r, r.busy))
        ev.callbacks.append(self._fin)

    def _fin(self, ev: simpy.events.Event) -> None:
        k, r, req = ev.value  # type: ignore[misc]
        if self.busy[k] is not r or r.busy is not req:
            return  # the replica died meanwhile: the device was freed then
        self.busy[k] = None
        self._next(k)
        self.on_done(r)

    def _next(self, k: int) -> None:
        q = self.wait[k]
        while q and self.busy[k] is None:
            r, work = q.popleft()
            if not r.dead:
                self._run(k, r, work)

    def release(self, r: Any) -> None:
        """Replica ``r`` is gone: free its device (if it held it), its place in a queue and
        its slot."""
        slot = self.of.pop(r.uid, None)
        self.checked.pop(r.uid, None)
        if slot is None:
            return
        del self.slots[slot]
        k = slot[1]
        self.wait[k] = deque(x for x in self.wait[k] if x[0] is not r)
        if self.busy[k] is r:
            self.busy[k] = None
            self._next(k)
