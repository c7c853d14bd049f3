"""Cache-aware, KL-dispersed replica placement (seed 001's Cache-Aware Scheduler; Eq. 11-13).

Pure: nodes and requests in, one ``Placement`` per replica added or removed
out, each with its reason.  The local provider's multi-node launcher, the
benchmark's simulated clusters and the tests call the same ``place``.  It lives
with the provider because the provider places replicas, as kube-scheduler does;
the autoscaling plugin only sets how many there are.

Two forces, blended per stage:

* **Cache affinity.**  A node that holds the stage in T0 (a warm zygote)
  starts a replica in tens of milliseconds; T1 needs a zygote start (~2.5 s
  on the reference machine), T2 adds the copy to shared memory, T3 the copy
  from the origin.  ``spawn_seconds`` is that expected time.
* **Dispersion (Eq. 11-12).**  The stage's replicas should be spread like a
  target distribution q proportional to node capacity (Eq. 11:
  q_n = c_n / sum_m c_m over the nodes eligible for the stage), so losing a
  node loses a proportional share, not the stage.  With p the replica
  distribution after the move, the dispersion cost is the Kullback-Leibler
  divergence (Eq. 12; Kullback & Leibler 1951, Cover & Thomas 2006, eq. 2.26)
  D(p || q) = sum_n p_n log(p_n / q_n), with p smoothed by a tiny epsilon
  so that empty nodes do not make it infinite.

Eq. 13, the blend: cost(n) = w_cache * spawn(n) + w_kl * D(p_n || q) + w_load * load(n),
each term min-max normalised over the candidate nodes (seconds and nats are not
comparable; normalised, the weights say directly how much a faster spawn may
cost in spread).  The paper's weights are not available; ours are
w_cache, w_kl = 0.7, 0.3 for **critical** stages (the bottleneck: a replica
now matters more than a perfect spread) and 0.4, 0.6 otherwise, w_load =
0.1.  Two rules are hard, not weighed: a node that cannot hold the stage
within its ``memory_threshold`` (counting unpinned cached stages as
evictable) is not a candidate, and a stage's second replica never shares a
node with its first while another node is eligible, so one node's failure
never takes a stage with two or more replicas down.  ``constraints`` (the
faas-cli ``constraints:`` list, ``key=value``, ``key==value``,
``key!=value``) filter nodes by label.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

TIER_SPAWN_S = {"T0": 0.04, "T1": 2.3, "T2": 2.5, "T3": 2.6}  # measured: benchmark.studies.scaleup
EPS = 1e-3


@dataclass(frozen=True)
class Node:
    name: str
    memory_bytes: int  # T1 budget (keys_manager's memory_threshold)
    used_bytes: int = 0
    capacity: float = 1.0  # relative compute (CPUs, accelerators): the target share
    cached: Mapping[str, str] = field(default_factory=dict)  # stage -> "T0" | "T1" | "T2"
    stage_bytes: Mapping[str, int] = field(default_factory=dict)  # T1 bytes per cached stage
    replicas: Mapping[str, int] = field(default_factory=dict)  # stage -> running replicas
    labels: Mapping[str, str] = field(default_factory=dict)
    up: bool = True

    def load(self) -> float:
        return sum(self.replicas.values()) / max(self.capacity, 1e-9)


@dataclass(frozen=True)
class StageRequest:
    stage: str
    add: int = 0
    remove: int = 0
    critical: bool = False
    bytes: int = 0  # T1 bytes the stage needs on a node that does not hold it yet
    constraints: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlacementConfig:
    w_cache: float = 0.4
    w_kl: float = 0.6
    w_cache_critical: float = 0.7
    w_kl_critical: float = 0.3
    w_load: float = 0.1
    bandwidth_bytes_s: float = 1e9  # T2/T3 copies, for the spawn-time model


@dataclass(frozen=True)
class Placement:
    stage: str
    action: str  # "add" | "remove"
    node: str | None  # None: no eligible node (the reason says why)
    tier: str
    reason: str


def parse_constraint(c: str) -> tuple[str, str, str]:
    for op in ("!=", "==", "="):
        if op in c:
            k, v = c.split(op, 1)
            if k.strip():
                return k.strip(), "!=" if op == "!=" else "==", v.strip()
    raise ValueError(f"constraint {c!r}: expected key=value, key==value or key!=value")


def satisfies(node: Node, constraints: Sequence[str]) -> bool:
    for c in constraints:
        k, op, v = parse_constraint(c)
        have = node.labels.get(k)
        if (op == "==" and have != v) or (op == "!=" and have == v):
            return False
    return True


def kl(p: Sequence[float], q: Sequence[float]) -> float:
    """D(p || q) in nats, p and q over the same nodes (p smoothed by EPS, renormalised)."""
    ps = [x + EPS for x in p]
    tp, tq = sum(ps), sum(q)
    return sum((a / tp) * math.log((a / tp) / (b / tq)) for a, b in zip(ps, q, strict=True)
               if b > 0)


def tier_on(node: Node, stage: str) -> str:
    return node.cached.get(stage, "T3")


def spawn_seconds(node: Node, req: StageRequest, cfg: PlacementConfig) -> float:
    tier = tier_on(node, req.stage)
    copy = 0.0 if tier in ("T0", "T1") else req.bytes / cfg.bandwidth_bytes_s
    return TIER_SPAWN_S[tier] + copy * (2 if tier == "T3" else 1)


def fits(node: Node, req: StageRequest) -> bool:
    """Room in T1 for the stage, counting cached stages without replicas as evictable."""
    if tier_on(node, req.stage) in ("T0", "T1"):
        return True
    evictable = sum(b for s, b in node.stage_bytes.items()
                    if node.replicas.get(s, 0) == 0 and node.cached.get(s) in ("T0", "T1"))
    return node.used_bytes - evictable + req.bytes <= node.memory_bytes


def place(nodes: Sequence[Node], requests: Sequence[StageRequest],
          cfg: PlacementConfig = PlacementConfig()) -> list[Placement]:
    """Decide every add and removal; later decisions see the earlier ones."""
    state = {n.name: n for n in nodes}
    out: list[Placement] = []
    for req in sorted(requests, key=lambda r: not r.critical):  # critical stages choose first
        for _ in range(req.remove):
            p = _remove_one(state, req)
            out.append(p)
            if p.node:
                n = state[p.node]
                state[p.node] = replace(n, replicas={**n.replicas,
                                                     req.stage: n.replicas[req.stage] - 1})
        for _ in range(req.add):
            p = _add_one(state, req, cfg)
            out.append(p)
            if p.node:
                n = state[p.node]
                cached = dict(n.cached)
                used = n.used_bytes
                if tier_on(n, req.stage) not in ("T0", "T1"):
                    used += req.bytes
                cached[req.stage] = "T0"  # the spawn leaves a warm zygote there
                state[p.node] = replace(n, cached=cached, used_bytes=used,
                                        stage_bytes={**n.stage_bytes, req.stage: req.bytes},
                                        replicas={**n.replicas,
                                                  req.stage: n.replicas.get(req.stage, 0) + 1})
    return out


def _eligible(state: Mapping[str, Node], req: StageRequest) -> list[Node]:
    return [n for n in state.values() if n.up and satisfies(n, req.constraints)]


def _add_one(state: Mapping[str, Node], req: StageRequest, cfg: PlacementConfig) -> Placement:
    eligible = _eligible(state, req)
    if not eligible:
        return Placement(req.stage, "add", None, "", "no node is up and satisfies the "
                         f"constraints {list(req.constraints)}")
    candidates = [n for n in eligible if fits(n, req)]
    if not candidates:
        return Placement(req.stage, "add", None, "", f"no eligible node has "
                         f"{req.bytes} bytes of T1 free (memory_threshold)")
    candidates = spread_rule(eligible, candidates, req.stage)
    q = [n.capacity for n in eligible]
    base = [n.replicas.get(req.stage, 0) for n in eligible]
    rows = []
    for n in candidates:
        p = [b + (1 if m.name == n.name else 0) for b, m in zip(base, eligible, strict=True)]
        rows.append((n, spawn_seconds(n, req, cfg), kl(p, q), n.load()))
    w_c, w_k = (cfg.w_cache_critical, cfg.w_kl_critical) if req.critical else \
        (cfg.w_cache, cfg.w_kl)
    spans = [_span([r[1] for r in rows]), _span([r[2] for r in rows]),
             _span([r[3] for r in rows])]
    best = None
    for n, s, d, load in rows:
        cost = (w_c * _norm(s, spans[0]) + w_k * _norm(d, spans[1])
                + cfg.w_load * _norm(load, spans[2]))
        key = (cost, load, n.name)
        if best is None or key < best[0]:
            best = (key, n, s, d)
    assert best is not None
    _, n, s, d = best
    tier = tier_on(n, req.stage)
    return Placement(req.stage, "add", n.name, tier,
                     f"{'critical: ' if req.critical else ''}{tier} on {n.name} "
                     f"(spawn ~{s * 1e3:.0f} ms), KL after {d:.3f}, load {n.load():.2f}")


def spread_rule(eligible: Sequence[Node], candidates: Sequence[Node], stage: str) -> list[Node]:
    """The hard anti-affinity rule, applied before any cost: a stage's second replica never
    shares the only node the stage runs on while another candidate can take it.  Exported so
    that every compared strategy (``benchmark.studies.placement``) obeys the same rule."""
    holders = {n.name for n in eligible if n.replicas.get(stage, 0) > 0}
    others = [n for n in candidates if n.name not in holders]
    return others if len(holders) == 1 and others else list(candidates)


def _span(xs: Sequence[float]) -> tuple[float, float]:
    return min(xs), max(xs)


def _norm(x: float, span: tuple[float, float]) -> float:
    lo, hi = span
    return 0.0 if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def _remove_one(state: Mapping[str, Node], req: StageRequest) -> Placement:
    holders = [n for n in state.values() if n.replicas.get(req.stage, 0) > 0]
    if not holders:
        return Placement(req.stage, "remove", None, "", "no replica to remove")
    eligible = _eligible(state, req) or holders
    names = [n.name for n in eligible]
    q = [n.capacity for n in eligible]
    base = [n.replicas.get(req.stage, 0) for n in eligible]
    best = None
    for n in holders:
        if not n.up:  # a replica on a failed node goes first
            return Placement(req.stage, "remove", n.name, tier_on(n, req.stage),
                             f"{n.name} is down")
        p = [b - (1 if m == n.name else 0) for b, m in zip(base, names, strict=True)] \
            if n.name in names else base
        key = (kl(p, q), -n.load(), n.name)
        if best is None or key < best[0]:
            best = (key, n)
    assert best is not None
    (d, _, _), n = best
    return Placement(req.stage, "remove", n.name, tier_on(n, req.stage),
                     f"{n.name} holds the most above its share (KL after {d:.3f})")
