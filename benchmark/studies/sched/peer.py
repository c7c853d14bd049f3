"""The gossip scheduler: no coordinator; every node decides from its own stale view.

As in seed 003, the load generator sends each request to a node chosen at
random.  That node decides at once, in-process, with
:func:`benchmark.studies.sched.decide.decide_gossip`: its own state is exact, its
peers' state is whatever the last gossip exchange brought (see ``gossip``),
so a peer believed idle may already be swamped.  Two things keep that from
turning into a herd: a node counts the requests it forwarded into its view of
the peer until fresher gossip replaces it, and a forwarded request is never
forwarded again (one hop, no ping-pong).

Failures: nothing stops scheduling, since there is nothing central to lose.
A client that cannot connect to a node (``connect_timeout_s``) stops sending
to it and picks another; a node whose forward cannot connect suspects the
target at once (direct evidence, as a failed SWIM probe) and runs the request
itself; everyone else learns of the death from the heartbeat detector.
"""

from __future__ import annotations

import random

import numpy as np

from benchmark.studies.sched.cluster import Cluster
from benchmark.studies.sched.decide import MIGRATE, decide_gossip
from benchmark.studies.sched.gossip import DEAD, Entry, View, choose_partners
from benchmark.studies.sched.node import Job, WorkerNode

__all__ = ["GossipScheduler"]


class GossipScheduler:
    def __init__(self, cluster: Cluster, entry: np.ndarray, gossip_rng: random.Random,
                 client_rng: np.random.Generator) -> None:
        self.cluster, self.env, self.cfg = cluster, cluster.env, cluster.cfg
        self.p = cluster.cfg.gossip
        self.entry = entry                        # pre-drawn entry node per request
        self._grng, self._crng = gossip_rng, client_rng
        self.views = {n: View(n) for n in cluster.names}
        self.version = {n: 0 for n in cluster.names}
        self.client_dead: set[str] = set()
        self.messages = 0
        self.entries_sent = 0
        self.ages: list[float] = []               # age of each alive peer view at a decision
        self.backlog_err: list[float] = []        # believed - true backlog, same moments
        self.detected_dead: dict[str, dict[str, float]] = {}  # victim -> {node: when}
        self.dead_after_s = self.p.dead_after_s(len(cluster.names))

    def _entry(self, name: str) -> Entry:
        return Entry.of(self.cluster.nodes[name].view(), self.version[name], self.env.now)

    def start(self) -> None:
        """Everyone starts knowing everyone (a join is a full state sync, as memberlist's)."""
        first = [self._entry(n) for n in self.cluster.names]
        for n in self.cluster.names:
            self.views[n].set_self(first[self.cluster.names.index(n)], 0.0)
            self.views[n].merge(first, 0.0)
        for n in self.cluster.names:
            offset = float(self._grng.uniform(0, self.p.period_s))
            self.env.process(self._gossip_loop(n, offset))

    # --- the protocol ------------------------------------------------------------------
    def _gossip_loop(self, name: str, offset: float):
        yield self.env.timeout(offset)
        node, view = self.cluster.nodes[name], self.views[name]
        while node.up:
            now = self.env.now
            self.version[name] += 1
            view.set_self(self._entry(name), now)
            view.detect(now, self.p.suspect_after_s, self.dead_after_s)
            for peer, e in view.entries.items():   # by its own timer or told by gossip
                if e.status == DEAD and name not in self.detected_dead.get(peer, {}):
                    self.detected_dead.setdefault(peer, {})[name] = now
            for peer in choose_partners(view.gossip_targets(), self.p.fanout, self._grng):
                self.env.process(self._exchange(name, peer, view.snapshot()))
            yield self.env.timeout(self.p.period_s)

    def _exchange(self, src: str, dst: str, entries: list[Entry]):
        self.messages += 1
        self.entries_sent += len(entries)
        yield self.env.timeout(self.p.msg_delay_s)
        if not self.cluster.nodes[dst].up:
            return                                   # lost; the detector will notice
        self.views[dst].merge(entries, self.env.now)
        reply = self.views[dst].snapshot()
        self.messages += 1
        self.entries_sent += len(reply)
        yield self.env.timeout(self.p.msg_delay_s)
        if self.cluster.nodes[src].up:
            self.views[src].merge(reply, self.env.now)

    # --- one request -------------------------------------------------------------------
    def handle(self, job: Job):
        env, cfg, nodes = self.env, self.cfg, self.cluster.nodes
        name = self._client_pick(self.cluster.names[int(self.entry[job.rid])])
        while True:
            yield env.timeout(cfg.rpc_s)                 # client -> node
            if nodes[name].up:
                break
            yield env.timeout(cfg.connect_timeout_s)
            self.client_dead.add(name)
            name = self._client_pick(name)
        node, view = nodes[name], self.views[name]
        spec = self.cluster.specs[job.model]
        peers = view.peers()
        self._record_staleness(peers)
        d = decide_gossip(node.view(), peers, spec, self.cluster.specs, False, cfg.rpc_s,
                          cfg.max_wait_s)
        job.action = d.action
        yield env.timeout(cfg.local_decide_s)
        if d.action != MIGRATE:
            self._run_at(node, job)
            return
        view.note_forward(d.node, job.model, spec.mean_serve_s
                          + (0.0 if job.model in peers_warm(peers, d.node) else spec.load_s))
        job.migrated = True
        yield env.timeout(cfg.rpc_s)                     # node -> peer
        if nodes[d.node].up:
            nodes[d.node].submit(job)
            return
        yield env.timeout(cfg.connect_timeout_s)
        view.suspect(d.node, env.now)
        if not node.up:
            self.cluster.fail_job(job)
            return
        job.action = decide_gossip(node.view(), [], spec, self.cluster.specs, True,
                                   cfg.rpc_s).action
        self._run_at(node, job)

    def _run_at(self, node: WorkerNode, job: Job) -> None:
        if node.up:
            node.submit(job)
        else:
            self.cluster.fail_job(job)

    def _client_pick(self, name: str) -> str:
        if name not in self.client_dead:
            return name
        ok = [n for n in self.cluster.names if n not in self.client_dead]
        if not ok:
            raise RuntimeError("the client can reach no node")
        return ok[int(self._crng.integers(len(ok)))]

    def _record_staleness(self, peers: list) -> None:
        for p in peers:
            if p.alive and p.origin_s is not None:
                self.ages.append(self.env.now - p.origin_s)
                true = self.cluster.nodes[p.name]
                if true.up:
                    self.backlog_err.append(p.backlog_s - true.backlog_s())

    def on_idle(self, node: WorkerNode) -> None:
        pass

    def on_node_failed(self, name: str) -> None:
        pass  # nobody is told: the heartbeat detector finds out


def peers_warm(peers: list, name: str) -> tuple[str, ...]:
    return next((p.warm for p in peers if p.name == name), ())
