"""The request path and the replica lifecycle, as the local provider runs them.

Per function (``local_provider/router.py``): a call takes the ready replica
with the fewest calls in flight among those below ``max_inflight``; if none
has a slot it waits in a bounded FIFO queue (full -> 429; waiting longer than
the queue timeout -> 504) and only the head may take a freed slot.  Because
a queued call exists only while every replica is full, a freed slot always
goes to the head on the replica that freed it: O(1) per release.

Per replica (``functions/stage/server.py``): compute is serialised by a lock,
so a replica is one server; its ``Server-Timing`` clock starts once the lock
is taken (waiting for it is queueing), so the compute time the gateway
reports, which the plugin reads as service time, is the compute alone.  On
an emulated-accelerator stage (``StageSpec.device``) the replica first spends
its own host CPU (``host_cpu_s``), then takes the lock and its node's device
(``devices.Devices``) and holds it, asleep, for the drawn time; only that
time is ``Server-Timing``.  A stage that is not
the last forwards its activations through the gateway and keeps its slot
(its waitress thread) until the next stage answers, so stage k's gateway
latency contains every later stage, as ``gateway_plugin/observe.py`` assumes.

The replica lifecycle (start, drain, death) is ``lifecycle.Lifecycle``.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

import simpy

from .cluster import Cluster, Node, Replica
from .lifecycle import Lifecycle
from .runtime import BUCKETS, HopJob, HostJob, Request, SpawnJob, Stage
from .spec import SimConfig

__all__ = ["Model"]

class Model(Lifecycle):
    def __init__(self, env: simpy.Environment, cfg: SimConfig, pipelines: list[list[Stage]],
                 fork: bool, cluster_of: Any, latency: list[float], ok: list[bool]) -> None:
        self.env = env
        self.cfg = cfg
        self.pipes = pipelines
        self.fork = fork
        self.cluster: Cluster = cluster_of(self._done)
        self.gateway: Node | None = (self.cluster.by_name[cfg.gateway_node]
                                     if cfg.gateway_node is not None else None)
        self.gw_busy = False
        self.gw_queue: deque[HopJob] = deque()
        if self.gateway is None:  # a gateway of its own: its CPU time is just delay
            for st in (s for p in pipelines for s in p):
                st.hop_delay, st.hop_work = st.hop_delay + st.hop_work, 0.0
        self.latency = latency
        self.ok = ok
        self.outstanding = 0
        self.events = 0
        self.uids = 0
        self.actions = {"serve": 0, "cold_start": 0, "fork_start": 0}
        self.rejected = {"429": 0, "504": 0, "502": 0}
        self.client_free = cfg.client_slots  # None: the client has no bound
        self.client_wait: deque[tuple[Request, Stage]] = deque()

    # -- the client -------------------------------------------------------------------

    def send(self, req: Request, st: Stage) -> None:
        """A request leaves the client (its hop to the gateway already paid), or waits
        there for a free slot (``SimConfig.client_slots``)."""
        if self.client_free is None:
            self.enter(req, st)
        elif self.client_free > 0:
            self.client_free -= 1
            self.enter(req, st)
        else:
            self.client_wait.append((req, st))

    def _client_release(self) -> None:
        """An answer came back: the slot goes to the request that waited longest, which
        now makes its hop to the gateway."""
        if self.client_wait:
            req, st = self.client_wait.popleft()
            ev = self.env.timeout(st.hop_delay, (req, st))
            ev.callbacks.append(self._arrive_cb)
        else:
            self.client_free += 1  # type: ignore[operator]

    # -- the request path ----------------------------------------------------------

    def arrive(self, req: Request, st: Stage) -> None:
        now = self.env.now
        st.started += 1
        if st.ia_last >= 0.0:  # inter-arrival moments, as the gateway keeps them
            gap = now - st.ia_last
            st.ia_n += 1.0
            st.ia_s += gap
            st.ia_q += gap * gap
        st.ia_last = now
        req.k = st.pos
        req.arr[st.pos] = now
        if not st.queue:
            r = self._pick(st)
            if r is not None:
                self._take(req, r)
                return
        if len(st.queue) >= self.cfg.queue_size:
            self.rejected["429"] += 1
            self.finish(req, st.pos, "429")
            return
        req.tc = now
        st.queue.append(req)
        if not st.timer:
            self._arm_timeout(st, now + self.cfg.queue_timeout_s)

    def _arrive_cb(self, ev: Any) -> None:
        self.events += 1
        req, st = ev.value
        if req.k >= 0:
            self.enter(req, st)

    @staticmethod
    def _pick(st: Stage) -> Replica | None:
        best = None
        cap = st.spec.max_inflight
        for r in st.replicas:
            if r.ready and not r.draining and r.inflight < cap and \
                    (best is None or r.inflight < best.inflight):
                best = r
        return best

    def _take(self, req: Request, r: Replica) -> None:
        r.inflight += 1
        req.held[req.k] = r
        req.tc = self.env.now
        r.holders[req] = None
        if r.stage.host_work > 0.0:
            r.node.start(HostJob(req, r), r.stage.host_work)  # type: ignore[arg-type]
        else:
            self._lock(req, r)

    def _lock(self, req: Request, r: Replica) -> None:
        if r.busy is None:
            self._compute(r, req)
        else:
            r.lockq.append(req)

    def _compute(self, r: Replica, req: Request) -> None:
        r.busy = req
        req.tc = self.env.now  # Server-Timing starts with the lock taken
        work = r.stage.draw()
        if r.fresh:
            r.fresh = False
            work += r.stage.first_call_s
        if r.stage.on_device:
            r.node.dev.start(r, work)  # type: ignore[union-attr]
        else:
            r.node.start(r, work)

    def _computed(self, r: Replica) -> None:
        """A replica finished one request's compute (called by its node)."""
        req = r.busy
        r.busy = None
        st = r.stage
        c = self.env.now - req.tc
        st.c_n += 1.0
        st.c_s += c
        st.c_q += c * c
        if r.lockq:
            nxt = r.lockq.popleft()
            if st.handoff > 0.0:  # the waiter wakes and takes the GIL: the lock stays taken
                r.busy = nxt
                ev = self.env.timeout(st.handoff, (r, nxt))
                ev.callbacks.append(self._handoff_cb)
            else:
                self._compute(r, nxt)
        nxt = st.next
        if nxt is None:
            self.finish(req, st.pos, "200")
        else:
            req.k = nxt.pos  # in transit: downstream of this stage already
            if nxt.hop_delay > 0.0:
                ev = self.env.timeout(nxt.hop_delay, (req, nxt))
                ev.callbacks.append(self._arrive_cb)
            else:
                self.enter(req, nxt)

    def _handoff_cb(self, ev: Any) -> None:
        self.events += 1
        r, req = ev.value
        if r.busy is req and not r.dead:
            self._compute(r, req)

    def enter(self, req: Request, st: Stage) -> None:
        """The hop's CPU part on the gateway's node, then arrival.  The embedded gateway is
        one Python process whose proxy work holds the GIL: one hop at a time, FIFO."""
        if st.hop_work > 0.0 and self.gateway is not None:
            job = HopJob(req, st)
            if self.gw_busy:
                self.gw_queue.append(job)
            else:
                self.gw_busy = True
                self.gateway.start(job, st.hop_work)  # type: ignore[arg-type]
        else:
            self.arrive(req, st)

    def _done(self, job: Replica | HopJob | HostJob | SpawnJob) -> None:
        """A node finished a job: a replica's compute, a hop's CPU or a replica's host CPU."""
        if job.__class__ is SpawnJob:
            self._spawned(job)
        elif job.__class__ is HostJob:
            r, req = job.replica, job.req
            if not r.dead and req.k == r.stage.pos and req.held[req.k] is r:
                self._lock(req, r)
        elif job.__class__ is HopJob:
            assert self.gateway is not None
            if self.gw_queue:
                nxt = self.gw_queue.popleft()
                self.gateway.start(nxt, nxt.stage.hop_work)  # type: ignore[arg-type]
            else:
                self.gw_busy = False
            req = job.req
            if req.k >= 0:
                self.arrive(req, job.stage)
        else:
            self._computed(job)  # type: ignore[arg-type]

    def finish(self, req: Request, k: int, code: str) -> None:
        self._close(req, k, code)
        req.k = -1

    def _close(self, req: Request, k: int, code: str) -> None:
        """The answer (or error) of stage ``k`` travels back up: every stage from ``k`` down
        to the client (or to the stage whose replica died) records it and frees its slot."""
        now = self.env.now
        stages = self.pipes[req.p]
        for j in range(k, req.lo - 1, -1):
            st = stages[j]
            d = now - req.arr[j]
            st.lat_n += 1
            st.lat_s += d
            st.buckets[bisect_left(BUCKETS, d)] += 1
            st.codes[code] = st.codes.get(code, 0) + 1
            r = req.held[j]
            if r is not None:
                req.held[j] = None
                self._release(r, req)
        if req.lo == 0:
            self._result(req, code == "200")

    def _result(self, req: Request, good: bool) -> None:
        self.outstanding -= 1
        if self.client_free is not None:
            self._client_release()
        if good:
            self.latency[req.i] = self.env.now - req.t0
            self.ok[req.i] = True
            self.actions["serve"] += 1

    def _release(self, r: Replica, req: Request) -> None:
        r.inflight -= 1
        r.served += 1
        del r.holders[req]
        if r.dead:
            return
        if r.draining:
            if r.inflight == 0:
                self.retire(r)
            return
        q = r.stage.queue
        if q:  # the only free slot anywhere is the one just freed
            self._take(q.popleft(), r)

    # -- queue timeouts ---------------------------------------------------------------

    def _arm_timeout(self, st: Stage, at: float) -> None:
        st.timer = True
        ev = self.env.timeout(max(0.0, at - self.env.now), st)
        ev.callbacks.append(self._timeout_cb)

    def _timeout_cb(self, ev: Any) -> None:
        self.events += 1
        st: Stage = ev.value
        st.timer = False
        q, limit = st.queue, self.cfg.queue_timeout_s
        now = self.env.now
        while q and now - q[0].tc >= limit - 1e-9:
            req = q.popleft()
            self.rejected["504"] += 1
            self.finish(req, st.pos, "504")
        if q:
            self._arm_timeout(st, q[0].tc + limit)
