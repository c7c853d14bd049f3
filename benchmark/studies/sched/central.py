"""The centralised scheduler: one coordinator, the true global view, one point of failure.

Every request goes client -> coordinator -> node.  The coordinator sees every
node's queue and cache exactly (it placed everything there) and decides with
:func:`benchmark.studies.sched.decide.decide_central`; decisions are serial, each
costing ``central_decide_s`` (its request handling, see ``config``), so it is
also a throughput ceiling.  It learns that a worker died by missed heartbeats
(``detect_s``) or, sooner, by a dispatch that cannot connect — then it routes
that request again.

The coordinator runs on one of the nodes (``host``).  When that node dies
nothing is scheduled: requests reaching it, or waiting in its decision queue,
retry until a standby has taken over, ``failover_s`` later (leader-election
lease expiry), which then rebuilds its view from the live nodes.

MIGRATE, centrally: when a node goes idle, the coordinator hands it the
request queued longest-to-wait elsewhere whose model this node has loaded
(work stealing, one request at a time: Blumofe & Leiserson, *Scheduling
Multithreaded Computations by Work Stealing*, JACM 1999, with the thief
chosen by the scheduler that sees all queues).  Routing with exact backlogs
is still blind to how long each draw really takes and to bursts that arrive
after a cold start was chosen; stealing mends the queues it leaves uneven.
A request moves at most once.
"""

from __future__ import annotations

import simpy

from benchmark.studies.sched.cluster import Cluster
from benchmark.studies.sched.decide import MIGRATE, decide_central
from benchmark.studies.sched.node import Job, WorkerNode

__all__ = ["Coordinator"]


class Coordinator:
    def __init__(self, cluster: Cluster, host: str) -> None:
        if host not in cluster.nodes:
            raise ValueError(f"coordinator host {host!r} is not a node")
        self.cluster, self.env, self.cfg = cluster, cluster.env, cluster.cfg
        self.host = host
        self.up = True
        self.epoch = 0
        self.back: simpy.Event = self.env.event()
        self.busy = simpy.Resource(self.env, capacity=1)
        self.known_dead: set[str] = set()
        self.decisions = 0
        self.downtime: list[tuple[float, float]] = []
        self.redispatched = 0

    def start(self) -> None:
        pass

    # --- one request ---------------------------------------------------------------------
    def handle(self, job: Job):
        env, cfg, nodes = self.env, self.cfg, self.cluster.nodes
        yield env.timeout(cfg.rpc_s)                       # client -> coordinator
        while True:
            if not self.up:
                yield self.back                            # retried until a standby leads
                continue
            epoch = self.epoch
            with self.busy.request() as slot:
                yield slot
                yield env.timeout(cfg.central_decide_s)
            if epoch != self.epoch or not self.up:
                continue                                   # lost with the coordinator
            views = [nodes[n].view(alive=n not in self.known_dead) for n in self.cluster.names]
            d = decide_central(views, self.cluster.specs[job.model], self.cluster.specs,
                               cfg.max_wait_s)
            self.decisions += 1
            job.action = d.action
            node = nodes[d.node]
            node.expect(job)
            yield env.timeout(cfg.rpc_s)                   # coordinator -> node
            if node.up:
                node.submit(job)
                return
            yield env.timeout(cfg.connect_timeout_s)       # a crashed host does not answer
            self.known_dead.add(d.node)
            self.redispatched += 1

    # --- failures ------------------------------------------------------------------------
    def on_node_failed(self, name: str) -> None:
        self.env.process(self._detect(name))
        if name == self.host and self.up:
            self.up = False
            self.epoch += 1
            self.back = self.env.event()
            self.env.process(self._failover())

    def _detect(self, name: str):
        yield self.env.timeout(self.cfg.detect_s)
        self.known_dead.add(name)

    def _failover(self):
        down_at = self.env.now
        yield self.env.timeout(self.cfg.failover_s)
        live = self.cluster.live()
        if not live:
            raise RuntimeError("every node is down: no standby can take over")
        self.host = live[0].name
        self.known_dead = {n for n in self.cluster.names if not self.cluster.nodes[n].up}
        self.up = True
        self.downtime.append((down_at, self.env.now))
        self.back.succeed()

    # --- MIGRATE: an idle node pulls queued work -----------------------------------------
    def on_idle(self, node: WorkerNode) -> None:
        if self.cfg.rebalance and self.up:
            self.env.process(self._steal(node))

    def _steal(self, thief: WorkerNode):
        env, cfg = self.env, self.cfg
        epoch = self.epoch
        with self.busy.request() as slot:
            yield slot
            yield env.timeout(cfg.central_decide_s)
        if epoch != self.epoch or not self.up or not thief.up or thief.queue_len():
            return
        pick = self._victim(thief)
        if pick is None:
            return
        donor, job = pick
        if not donor.take_queued(job):
            return
        job.action, job.migrated = MIGRATE, True
        self.decisions += 1
        thief.expect(job)
        yield env.timeout(cfg.rpc_s)
        if thief.up:
            thief.submit(job)
        elif donor.up:
            donor.submit(job)   # the thief died in between: back where it was
        else:
            self.cluster.fail_job(job)

    def _victim(self, thief: WorkerNode) -> tuple[WorkerNode, Job] | None:
        """The queued request with the longest expected wait that ``thief`` can serve warm."""
        best: tuple[float, str, WorkerNode, Job] | None = None
        for name in self.cluster.names:
            donor = self.cluster.nodes[name]
            if donor is thief or not donor.up or name in self.known_dead:
                continue
            wait = max(0.0, donor.expected_end_s - self.env.now) if donor.current else 0.0
            have = set(donor.cache) | ({donor.current.model} if donor.current else set())
            for job in donor.queue:
                spec = self.cluster.specs[job.model]
                if job.model not in have:
                    wait += spec.load_s
                    have.add(job.model)
                if (not job.migrated and job.model in thief.cache
                        and wait > self.cfg.rpc_s
                        and (best is None or (wait, name) > (best[0], best[1]))):
                    best = (wait, name, donor, job)
                wait += spec.mean_serve_s
        return None if best is None else (best[2], best[3])
