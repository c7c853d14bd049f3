"""The replica lifecycle, as the local provider runs it (a mixin of ``model.Model``).

Lifecycle (``local_provider/registry.py``): desired vs live replicas are
reconciled on every scale call; surplus replicas are chosen not-ready first,
then by the placement policy; a removed replica drains (no new calls, the
ones in flight finish) and is killed after the drain timeout.  A dead
replica is replaced at the next reconcile tick.

Failures: calls computing, waiting for the lock, or waiting downstream on a
replica that dies get 502, like the live proxy, which retries a call only
when it never reached the replica (``proxy.py``); nothing is retried here.
Work already sent downstream continues (it still holds those stages'
replicas) and is dropped when it returns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cluster import Node, Replica
from .runtime import SpawnJob, Stage

if TYPE_CHECKING:
    import simpy

    from .cluster import Cluster
    from .runtime import Request
    from .spec import SimConfig

__all__ = ["Lifecycle"]


class Lifecycle:
    env: simpy.Environment
    cfg: SimConfig
    cluster: Cluster
    fork: bool
    uids: int
    events: int
    actions: dict[str, int]
    rejected: dict[str, int]

    if TYPE_CHECKING:  # the request path's, in Model
        def _pick(self, st: Stage) -> Replica | None: ...
        def _take(self, req: Request, r: Replica) -> None: ...
        def finish(self, req: Request, k: int, code: str) -> None: ...
        def _close(self, req: Request, k: int, code: str) -> None: ...

    # -- replica lifecycle ------------------------------------------------------------

    def _ready_changed(self, st: Stage, delta: int) -> None:
        now = self.env.now
        st.rs_acc += st.ready_n * (now - st.rs_t)
        st.rs_t = now
        st.ready_n += delta

    def place(self, st: Stage, ready_now: bool = False) -> bool:
        """Start one replica of ``st`` on the node placement chooses; False if none fits."""
        spec = st.spec
        node = self.cluster.choose(st.name, spec.memory_gib + spec.fork_overhead_gib
                                   if self.fork else spec.memory_gib, self.fork)
        if node is None:
            st.blocked += 1
            return False
        warm = self.fork and st.name in node.zygotes
        if self.fork:
            if not warm:
                node.make_room(spec.memory_gib + spec.fork_overhead_gib)
                node.add_zygote(st.name, spec.memory_gib)
            mem = spec.fork_overhead_gib
        else:
            node.make_room(spec.memory_gib)
            mem = spec.memory_gib
        self.uids += 1
        r = Replica(self.uids, st, node, st.cap, self.env.now, mem, "T0" if warm else "cold")
        st.replicas.append(r)
        node.replicas[r.uid] = r
        node.counts[st.name] = node.counts.get(st.name, 0) + 1
        node.mem_used += mem
        if ready_now:
            r.fresh = False
            self._set_ready(r)
            return True
        self.actions["fork_start" if warm else "cold_start"] += 1
        wall = st.spawn[r.tier]()
        if r.tier == "cold" and st.cold_cpu > 0.0:
            # its CPU is shared with the node's other work: 16 cold starts at once on 2
            # cores take ~8x as long as one (measured on the rig), a fork does not
            cpu = min(st.cold_cpu, wall)
            node.start(SpawnJob(r, wall - cpu), cpu)  # type: ignore[arg-type]
            return True
        ev = self.env.timeout(wall, r)
        ev.callbacks.append(self._ready_cb)
        return True

    def _spawned(self, job: SpawnJob) -> None:
        """A cold start's CPU is done: the rest of its start is waiting."""
        ev = self.env.timeout(job.rest_s, job.replica)
        ev.callbacks.append(self._ready_cb)

    def _ready_cb(self, ev: Any) -> None:
        self.events += 1
        r: Replica = ev.value
        if not (r.dead or r.draining):
            self._set_ready(r)

    def _set_ready(self, r: Replica) -> None:
        r.ready = True
        st = r.stage
        self._ready_changed(st, +1)
        q = st.queue
        while q:
            rr = self._pick(st)
            if rr is None:
                break
            self._take(q.popleft(), rr)

    def reconcile(self, st: Stage) -> None:
        live = [r for r in st.replicas if not r.draining]
        missing = st.desired - len(live)
        for _ in range(missing):
            if not self.place(st):
                break
        if missing < 0:
            starting = sorted((r for r in live if not r.ready), key=lambda r: -r.uid)
            for r in starting[:-missing]:
                self.retire(r)
            left = -missing - len(starting[:-missing])
            ready = [r for r in live if r.ready]
            for _ in range(min(left, len(ready))):
                r = self.cluster.victim(st.name, ready)
                ready.remove(r)
                self.drain(r)

    def drain(self, r: Replica) -> None:
        r.draining = True
        self._ready_changed(r.stage, -1)
        if r.inflight == 0:
            self.retire(r)
            return
        ev = self.env.timeout(self.cfg.drain_timeout_s, r)
        ev.callbacks.append(self._drain_cb)

    def _drain_cb(self, ev: Any) -> None:
        self.events += 1
        r: Replica = ev.value
        if not r.dead:
            self.kill(r)  # still busy after the drain timeout: stopped anyway

    def _forget(self, r: Replica) -> None:
        st, node = r.stage, r.node
        r.dead = True
        if node.dev is not None:  # its device and binding are freed (the kernel's locks)
            node.dev.release(r)
        st.replicas.remove(r)
        del node.replicas[r.uid]
        c = node.counts[st.name] - 1
        if c:
            node.counts[st.name] = c
        else:
            del node.counts[st.name]
        node.mem_used -= r.memory_gib

    def retire(self, r: Replica) -> None:
        """Gone without losing work: an idle drained replica, or one still starting."""
        if not r.dead:
            self._forget(r)

    def kill(self, r: Replica) -> None:
        """The replica's process is gone: its calls fail with 502."""
        if r.dead:
            return
        if r.ready and not r.draining:
            self._ready_changed(r.stage, -1)
        if r.busy is not None:
            r.node.stop(r)
            r.busy = None
        r.lockq.clear()
        self._forget(r)
        pos = r.stage.pos
        for req in list(r.holders):
            self.rejected["502"] += 1
            req.held[pos] = None
            if req.k > pos:  # work already sent on keeps its stages busy; nobody waits for it
                self._close(req, pos, "502")
                req.lo = pos + 1
            else:
                self.finish(req, pos, "502")
        r.holders.clear()

    def node_down(self, node: Node) -> list[Stage]:
        node.up = False
        hit = []
        for r in list(node.replicas.values()):
            if r.stage not in hit:
                hit.append(r.stage)
            self.kill(r)
        for s in list(node.zygotes):
            node.drop_zygote(s)
        return hit
