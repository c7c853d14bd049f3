"""The two schedulers' decisions, as pure functions over what each one can see.

Both compare expected completion times built from the same estimates: a
node's *backlog* (expected seconds of work ahead of a new request, loads
included) plus, when the model is not warm there, its load time and the loads
its evictions will cost others (:func:`cold_cost`).  "Warm" means
resident when a request queued now would start (the queue ahead replayed
through the node's cache, see ``node``).  A warm
queue is *too long* when its backlog exceeds ``max_wait_s`` (default: the
model's own cold-load time — beyond that, starting a fresh copy elsewhere can
finish sooner).  The central coordinator sees every node exactly; a gossip
node sees itself exactly and its peers through gossip, i.e. late.

Central (one coordinator, the true global view):
  SERVE on the warm node with the smallest backlog unless that queue is too
  long; then COLD_START on the node where a cold start is expected to finish
  first, if it beats that queue.  Among cold candidates within
  ``tie_s`` of the best, the cache-aware, KL-dispersed choice of
  ``placement.place`` (Eq. 11-13) picks the node.  It only
  breaks near-ties because it has no notion of a request backlog, which
  dominates a request's latency here.  What it adds: the candidates never hold
  the model, so its spawn tier and (with equal node capacities) its KL term are
  the same for all of them and its load term decides — the node holding the
  fewest models, i.e. the one whose LRU cache evicts least.  Memory is handed
  to it as free (``used_bytes=0``) because a node's LRU cache can always make
  room for a model no larger than its memory, which ``run`` checks up front.

Gossip (every node for itself, seed 003's "true gossip scheduler"):
  SERVE locally if warm and the local queue is not too long; else MIGRATE to
  the peer believed (alive and) fastest — warm there, or idle enough that a
  cold start there beats waiting here — if that beats the local option by more
  than the forwarding delay; otherwise SERVE (warm) or COLD_START locally.  A
  request that was already migrated runs where it lands: one hop, no
  ping-pong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from benchmark.studies.sched.models import MiB, ModelSpec
from placement import Node as PlacementNode
from placement import StageRequest, place

__all__ = [
    "ACTIONS",
    "COLD_START",
    "MIGRATE",
    "SERVE",
    "Decision",
    "NodeView",
    "cold_cost",
    "decide_central",
    "decide_gossip",
]

SERVE, COLD_START, MIGRATE = "serve", "cold_start", "migrate"
ACTIONS = (SERVE, COLD_START, MIGRATE)


@dataclass(frozen=True)
class NodeView:
    """A node as some scheduler believes it is (exact for the coordinator)."""

    name: str
    backlog_s: float              # expected wait before a new request starts
    queue_len: int                # requests queued or in service
    warm: tuple[str, ...]         # models loaded or about to be, sorted
    memory_mib: float
    used_mib: float = 0.0         # by those resident models
    alive: bool = True            # False: dead or suspected
    origin_s: float | None = None  # owner's clock when written (None: read live, exact)
    cached: tuple[str, ...] = ()  # resident when a new request would start, LRU first


def cold_cost(node: NodeView, spec: ModelSpec, catalog: Mapping[str, ModelSpec],
              warm_on: Mapping[str, int]) -> float | None:
    """Expected start of ``spec`` cold-started on ``node``, evictions included; None: too big.

    ``node.cached`` is the node as the new request would find it, the queue
    ahead of it replayed (see ``node``), so loading evicts from its least
    recently used end and never a model the queue still needs.  An
    evicted model that no other live node holds will cost its next request a
    cold load, so that load is added: without it, two busy models sharing too
    little memory evict each other on every burst (thrashing; Denning, *The
    Working Set Model for Program Behavior*, CACM 1968, is the classic account).
    ``warm_on[m]`` counts the live nodes where m is warm, ``node`` included.
    """
    if spec.size_mib > node.memory_mib:
        return None
    used = node.used_mib
    penalty = 0.0
    for m in node.cached:
        if used + spec.size_mib <= node.memory_mib:
            break
        used -= catalog[m].size_mib
        if warm_on.get(m, 0) - (m in node.warm) <= 0:
            penalty += catalog[m].load_s
    return node.backlog_s + spec.load_s + penalty


def warm_counts(nodes: Sequence[NodeView]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        if n.alive:
            for m in n.warm:
                out[m] = out.get(m, 0) + 1
    return out



@dataclass(frozen=True)
class Decision:
    action: str                   # SERVE | COLD_START | MIGRATE
    node: str                     # where the request will run
    reason: str


def _threshold(spec: ModelSpec, max_wait_s: float | None) -> float:
    return spec.load_s if max_wait_s is None else max_wait_s


def decide_central(nodes: Sequence[NodeView], spec: ModelSpec,
                   catalog: Mapping[str, ModelSpec], max_wait_s: float | None = None,
                   tie_s: float = 0.25) -> Decision:
    """Route one request with the global view; raises if no node is alive."""
    live = [n for n in nodes if n.alive]
    if not live:
        raise RuntimeError("no live node to schedule on")
    limit = _threshold(spec, max_wait_s)
    warm = [n for n in live if spec.name in n.warm]
    best = min(warm, key=lambda n: (n.backlog_s, n.queue_len, n.name)) if warm else None
    if best is not None and best.backlog_s <= limit:
        return Decision(SERVE, best.name, f"warm on {best.name}, backlog "
                        f"{best.backlog_s:.2f} s <= {limit:.2f} s")
    counts = warm_counts(live)
    cost = {}
    for n in live:
        if spec.name not in n.warm:
            c = cold_cost(n, spec, catalog, counts)
            if c is not None:
                cost[n.name] = c
    if cost:
        lo = min(cost.values())
        near = [n for n in live if n.name in cost and cost[n.name] <= lo + tie_s]
        target = _cache_aware(near, live, spec) if len(near) > 1 else near[0].name
        if best is None or cost[target] < best.backlog_s:
            why = ("no node holds it" if best is None else
                   f"warm queue on {best.name} too long ({best.backlog_s:.2f} s)")
            return Decision(COLD_START, target, f"{why}; load on {target}, expected start "
                            f"{cost[target]:.2f} s")
    if best is None:
        # every node is mid-load with no room yet: queue behind the least loaded
        target = min(live, key=lambda n: (n.backlog_s, n.name)).name
        return Decision(COLD_START, target, f"no room anywhere now; load on {target} later")
    return Decision(SERVE, best.name, f"warm on {best.name}; a cold start elsewhere is not "
                    f"faster than its backlog {best.backlog_s:.2f} s")


def _cache_aware(candidates: Sequence[NodeView], live: Sequence[NodeView],
                 spec: ModelSpec) -> str:
    """Break a near-tie with the placement plugin's cache-aware, KL-dispersed choice."""
    names = {n.name for n in candidates}
    pnodes = [PlacementNode(
        name=n.name, memory_bytes=int(n.memory_mib * MiB), used_bytes=0,
        cached={m: "T0" for m in n.warm}, replicas={m: 1 for m in n.warm},
        up=n.name in names) for n in live]
    got = place(pnodes, [StageRequest(spec.name, add=1, bytes=int(spec.size_mib * MiB))])
    node = got[0].node if got else None
    return node if node in names else min(candidates, key=lambda n: (n.backlog_s, n.name)).name


def decide_gossip(local: NodeView, peers: Sequence[NodeView], spec: ModelSpec,
                  catalog: Mapping[str, ModelSpec], migrated: bool, forward_s: float,
                  max_wait_s: float | None = None) -> Decision:
    """One node's own decision from its exact self-view and its gossiped peer views."""
    warm_here = spec.name in local.warm
    here = SERVE if warm_here else COLD_START
    if migrated:
        return Decision(here, local.name, "migrated here: runs here (one hop)")
    limit = _threshold(spec, max_wait_s)
    if warm_here and local.backlog_s <= limit:
        return Decision(SERVE, local.name, f"warm here, backlog {local.backlog_s:.2f} s")
    everyone = [local, *[p for p in peers if p.alive and p.name != local.name]]
    counts = warm_counts(everyone)
    if warm_here:
        local_cost = local.backlog_s
    else:
        c = cold_cost(local, spec, catalog, counts)
        local_cost = math.inf if c is None else c
    best: tuple[float, str, str] | None = None
    for p in everyone[1:]:
        if spec.name in p.warm:
            cost, what = p.backlog_s, "warm"
        else:
            c = cold_cost(p, spec, catalog, counts)
            if c is None:
                continue
            cost, what = c, "cold"
        if best is None or (cost, p.name) < (best[0], best[1]):
            best = (cost, p.name, what)
    if best is not None and best[0] + forward_s < local_cost:
        return Decision(MIGRATE, best[1], f"peer {best[1]} believed {best[2]} with start "
                        f"{best[0]:.2f} s < here {local_cost:.2f} s")
    return Decision(here, local.name, f"{'warm' if warm_here else 'cold'} here, expected start "
                    f"{local_cost:.2f} s; no peer believed faster")
