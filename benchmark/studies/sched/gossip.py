"""Gossip state dissemination and failure detection for the decentralised scheduler.

The protocol, and where each piece comes from:

* **Anti-entropy by periodic push-pull** (Demers et al., *Epidemic Algorithms
  for Replicated Database Maintenance*, PODC 1987, sec. 1.3): every
  ``period_s`` a node sends its whole table to ``fanout`` peers chosen at
  random and each answers with its own; both keep, per node, the entry with
  the higher version.  A rumour then reaches all n nodes in O(log n) rounds;
  for push-pull with one partner per round, log3 n + O(log log n) (Karp,
  Schindelhauer, Shenker, Vöcking, *Randomized Rumor Spreading*, FOCS 2000).
  :func:`rounds_to_converge` measures it with this very merge code.
* **Heartbeat failure detection** (van Renesse, Minsky, Hayden, *A
  Gossip-Style Failure Detection Service*, Middleware 1998): an entry's version
  is its owner's heartbeat counter, bumped every round; a peer whose counter
  has not grown for ``suspect_after_s`` is suspected.
* **Suspicion** (Das, Gupta, Motivala, *SWIM*, DSN 2002, sec. 4.2): a suspected
  node is not yet dead; suspicion is gossiped like any state, a fresher
  heartbeat (higher version) refutes it, and only a suspicion that outlives
  the suspicion timeout becomes *dead*.  At equal versions dead > suspect >
  alive, SWIM's precedence.  A node never accepts suspicion about itself.

Defaults follow HashiCorp memberlist's ``DefaultLANConfig`` (the SWIM
implementation behind Consul and Serf): GossipInterval 200 ms, GossipNodes 3,
ProbeInterval 1 s + ProbeTimeout 0.5 s before a peer is suspected, and a
suspicion timeout of SuspicionMult (4) x max(1, log10 n) x ProbeInterval.

Each entry carries the owner's clock when it was written (``origin_s``): its
age is how stale a decision made from it is.  Entries carry what the scheduler
needs: backlog, queue length, warm models, memory.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from benchmark.studies.sched.decide import NodeView

__all__ = ["ALIVE", "DEAD", "SUSPECT", "Entry", "GossipParams", "View", "rounds_to_converge"]

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
_RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2}


@dataclass(frozen=True)
class GossipParams:
    period_s: float = 0.2
    fanout: int = 3
    msg_delay_s: float = 0.0005          # one-way LAN message
    suspect_after_s: float = 1.5         # ProbeInterval + ProbeTimeout
    suspicion_mult: float = 4.0
    probe_interval_s: float = 1.0

    def __post_init__(self) -> None:
        for f in ("period_s", "suspect_after_s", "suspicion_mult", "probe_interval_s"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"gossip {f} must be > 0, got {v!r}")
        if not (math.isfinite(self.msg_delay_s) and self.msg_delay_s >= 0):
            raise ValueError(f"gossip msg_delay_s must be >= 0, got {self.msg_delay_s!r}")
        if int(self.fanout) != self.fanout or self.fanout < 1:
            raise ValueError(f"gossip fanout must be an integer >= 1, got {self.fanout!r}")

    def dead_after_s(self, n: int) -> float:
        """memberlist's suspicionTimeout: mult x max(1, log10 n) x probe interval."""
        return self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.probe_interval_s


@dataclass(frozen=True)
class Entry:
    node: str
    version: int                  # the owner's heartbeat counter
    origin_s: float               # owner's clock when written
    backlog_s: float = 0.0
    queue_len: int = 0
    warm: tuple[str, ...] = ()
    memory_mib: float = 0.0
    used_mib: float = 0.0
    cached: tuple[str, ...] = ()
    status: str = ALIVE

    @classmethod
    def of(cls, view: NodeView, version: int, origin_s: float) -> Entry:
        return cls(view.name, version, origin_s, view.backlog_s, view.queue_len, view.warm,
                   view.memory_mib, view.used_mib, view.cached)

    def supersedes(self, other: Entry) -> bool:
        if self.version != other.version:
            return self.version > other.version
        return _RANK[self.status] > _RANK[other.status]


class View:
    """One node's table of everyone (itself included), with local bookkeeping."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.entries: dict[str, Entry] = {}
        self._heard_s: dict[str, float] = {}      # local time the version last grew
        self._suspected_s: dict[str, float] = {}  # local time suspicion began
        self._peers: list[NodeView] | None = None  # built once per change of the table

    def _put(self, name: str, e: Entry) -> None:
        self.entries[name] = e
        self._peers = None

    def set_self(self, entry: Entry, now: float) -> None:
        if entry.node != self.owner:
            raise ValueError(f"{self.owner} cannot set {entry.node}'s own entry")
        self._put(self.owner, entry)
        self._heard_s[self.owner] = now

    def merge(self, incoming: Iterable[Entry], now: float) -> int:
        """Keep the newer of each pair; returns how many entries changed."""
        changed = 0
        for e in incoming:
            if e.node == self.owner:
                continue  # nobody knows me better than I do (and I refute suspicion)
            cur = self.entries.get(e.node)
            if cur is e or (cur is not None and not e.supersedes(cur)):
                continue  # (entries are immutable and shared: most arrive unchanged)
            if cur is None or e.version > cur.version:
                self._heard_s[e.node] = now
            if e.status != ALIVE and (cur is None or cur.status == ALIVE):
                self._suspected_s[e.node] = now
            self._put(e.node, e)
            changed += 1
        return changed

    def detect(self, now: float, suspect_after_s: float, dead_after_s: float) -> list[str]:
        """Heartbeat timeouts: alive -> suspect -> dead; returns nodes newly declared dead."""
        dead = []
        for name, e in list(self.entries.items()):
            if name == self.owner:
                continue
            if e.status == ALIVE and now - self._heard_s.get(name, now) > suspect_after_s:
                self._put(name, replace(e, status=SUSPECT))
                self._suspected_s[name] = now
            elif (e.status == SUSPECT
                  and now - self._suspected_s.get(name, now) > dead_after_s):
                self._put(name, replace(e, status=DEAD))
                dead.append(name)
        return dead

    def suspect(self, node: str, now: float) -> None:
        """Direct evidence (a connection refused): suspect it now, without waiting."""
        e = self.entries.get(node)
        if node != self.owner and e is not None and e.status == ALIVE:
            self._put(node, replace(e, status=SUSPECT))
            self._suspected_s[node] = now

    def note_forward(self, node: str, model: str, cost_s: float) -> None:
        """After handing a request to ``node``, count it there until fresher gossip arrives.

        Without this, every node that believes the same peer idle forwards a
        whole burst to it before the next gossip round says otherwise.
        """
        e = self.entries.get(node)
        if e is not None:
            if model in e.warm:
                warm, cached = e.warm, (*(m for m in e.cached if m != model), model)
            else:  # what it will evict to make room is left to the next gossip to tell
                warm, cached = tuple(sorted((*e.warm, model))), (*e.cached, model)
            self._put(node, replace(e, backlog_s=e.backlog_s + cost_s,
                                    queue_len=e.queue_len + 1, warm=warm, cached=cached))

    def gossip_targets(self) -> list[str]:
        """Peers worth talking to: all but the dead (a suspect may yet refute)."""
        return sorted(n for n, e in self.entries.items() if n != self.owner and e.status != DEAD)

    def peers(self) -> list[NodeView]:
        """Everyone but the owner, as the scheduler reads them (age = now - origin_s)."""
        if self._peers is None:
            self._peers = [
                NodeView(e.node, e.backlog_s, e.queue_len, e.warm, e.memory_mib, e.used_mib,
                         alive=e.status == ALIVE, origin_s=e.origin_s, cached=e.cached)
                for n, e in sorted(self.entries.items()) if n != self.owner]
        return self._peers

    def snapshot(self) -> list[Entry]:
        return list(self.entries.values())


def choose_partners(targets: Sequence[str], fanout: int, rng: random.Random) -> list[str]:
    """``fanout`` distinct peers, uniformly (all of them if there are fewer).

    The stdlib generator, seeded from the run's seed: a scalar draw from it
    costs a fraction of a microsecond, a NumPy scalar draw several, and the
    gossip loop makes one per node per round.
    """
    if len(targets) <= fanout:
        return list(targets)
    return sorted(rng.sample(targets, fanout))


def rounds_to_converge(n: int, fanout: int = 1, seed: int = 0, max_rounds: int = 10_000) -> int:
    """Synchronous push-pull rounds until every node holds node 0's newest entry.

    All tables start in agreement on node 0's entry at version 0; node 0 then
    writes version 1.  Each round every node exchanges tables with ``fanout``
    random partners (the exchanges of a round see the state at the round's
    start, as with messages in flight).  Returns the number of rounds.  Tables
    start with only their owner and node 0 and fill up as they gossip, which
    changes nothing about how node 0's update spreads.
    """
    if n < 2:
        raise ValueError("convergence needs at least 2 nodes")
    if fanout < 1:
        raise ValueError("fanout must be >= 1")
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(n)]
    views = {m: View(m) for m in names}
    for m in names:
        views[m].set_self(Entry(m, 0, 0.0), 0.0)
        views[m].merge([Entry(names[0], 0, 0.0)], 0.0)
    views[names[0]].set_self(Entry(names[0], 1, 0.0), 0.0)
    for r in range(1, max_rounds + 1):
        start = {m: views[m].snapshot() for m in names}
        for i, m in enumerate(names):
            for j in sorted(rng.sample(range(n - 1), min(fanout, n - 1))):
                p = names[j + (j >= i)]  # skip itself
                views[p].merge(start[m], float(r))   # push
                views[m].merge(start[p], float(r))   # pull
        if all(views[m].entries[names[0]].version == 1 for m in names):
            return r
    raise RuntimeError(f"no convergence in {max_rounds} rounds")
