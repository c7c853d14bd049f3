"""Where replicas go, compared on identical simulated clusters: cache-aware vs random vs
least-loaded placement.

Each run replays the same seeded demand (desired replicas per stage, a random walk
with bursts) on a cluster of nodes, each with a keys_manager memory budget.  The
node model follows keys_manager: a spawn leaves the stage warm (T0) on its node;
a stage whose replicas are gone stays cached until its T1 space is needed (LRU),
then it falls back to T2 (node disk).  Spawn time per tier is the measured model
in ``placement.TIER_SPAWN_S``.  Every strategy obeys the same hard rules:
a node must hold the stage within its memory budget (``fits``), and a stage's
second replica never shares the only node it runs on (``placement.spread_rule``),
so the comparison measures the cache and KL terms, not a rule one side lacks.
Removals use each strategy's own victim choice (cache-aware: KL; the others:
the busiest node / random), which is part of what the KL term does.

Reported per strategy: the share of spawns served from T0/T1, the mean spawn
time, and after each period the stages a single node failure would leave with no
replica (every node tried in turn), summed over the run.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import dataclass, field, replace

from placement import (
    TIER_SPAWN_S,
    Node,
    PlacementConfig,
    StageRequest,
    fits,
    place,
    spawn_seconds,
    spread_rule,
    tier_on,
)

GiB = 1 << 30


@dataclass
class Cluster:
    nodes: dict[str, Node]
    lru: dict[str, list[str]] = field(default_factory=dict)  # node -> cached stages, oldest 1st

    def add(self, node: str, stage: str, nbytes: int) -> str:
        n = self.nodes[node]
        tier = tier_on(n, stage)
        cached, sb, used = dict(n.cached), dict(n.stage_bytes), n.used_bytes
        if tier not in ("T0", "T1"):
            order = self.lru.setdefault(node, [])
            while used + nbytes > n.memory_bytes:
                victim = next((s for s in order if n.replicas.get(s, 0) == 0), None)
                if victim is None:
                    break
                order.remove(victim)
                used -= sb.pop(victim, 0)
                cached[victim] = "T2"
            used += nbytes
            sb[stage] = nbytes
        cached[stage] = "T0"
        order = self.lru.setdefault(node, [])
        if stage in order:
            order.remove(stage)
        order.append(stage)
        self.nodes[node] = replace(n, cached=cached, stage_bytes=sb, used_bytes=used,
                                   replicas={**n.replicas, stage: n.replicas.get(stage, 0) + 1})
        return tier

    def remove(self, node: str, stage: str) -> None:
        n = self.nodes[node]
        self.nodes[node] = replace(n, replicas={**n.replicas, stage: n.replicas[stage] - 1})

    def orphaned_by_one_failure(self, stages: list[str]) -> int:
        total = 0
        for down in self.nodes:
            for s in stages:
                alive = sum(n.replicas.get(s, 0) for name, n in self.nodes.items()
                            if name != down)
                have = sum(n.replicas.get(s, 0) for n in self.nodes.values())
                total += have > 0 and alive == 0
        return total


def choose(strategy: str, cl: Cluster, req: StageRequest, rng: random.Random,
           cfg: PlacementConfig) -> list[tuple[str, str | None]]:
    """[(action, node)] for one stage's adds/removes under ``strategy``."""
    if strategy == "cache-aware":
        return [(p.action, p.node) for p in place(list(cl.nodes.values()), [req], cfg)]
    out: list[tuple[str, str | None]] = []
    shadow = Cluster(dict(cl.nodes), {k: list(v) for k, v in cl.lru.items()})
    for _ in range(req.remove):
        holders = [n for n in shadow.nodes.values() if n.replicas.get(req.stage, 0) > 0]
        if not holders:
            out.append(("remove", None))
            continue
        n = rng.choice(holders) if strategy == "random" else max(holders, key=Node.load)
        shadow.remove(n.name, req.stage)
        out.append(("remove", n.name))
    for _ in range(req.add):
        up = [n for n in shadow.nodes.values() if n.up]
        ok = spread_rule(up, [n for n in up if fits(n, req)], req.stage)
        if not ok:
            out.append(("add", None))
            continue
        n = rng.choice(ok) if strategy == "random" else min(ok, key=lambda x: (x.load(), x.name))
        shadow.add(n.name, req.stage, req.bytes)
        out.append(("add", n.name))
    return out


def run(strategy: str, n_nodes: int, pipelines: int, stages: int, periods: int, seed: int,
        stage_gib: float, node_gib: float) -> dict:
    rng = random.Random(seed)  # demand: identical for every strategy
    pick = random.Random(seed + 1)  # the random strategy's own choices
    cfg = PlacementConfig()
    cl = Cluster({f"node-{i}": Node(f"node-{i}", int(node_gib * GiB)) for i in range(n_nodes)})
    names = [f"p{p}-s{s}" for p in range(pipelines) for s in range(stages)]
    nbytes = int(stage_gib * GiB)
    want = {s: 2 for s in names}
    have = {s: 0 for s in names}
    tiers, times, orphaned, failed = [], [], 0, 0
    for _t in range(periods):
        for s in names:  # bursty demand: mostly small steps, sometimes a jump
            step = rng.choice([-1, 0, 0, 1]) + (rng.random() < 0.1) * rng.randint(2, 4)
            want[s] = max(2, min(8, want[s] + step))
        critical = {max(names[p * stages:(p + 1) * stages], key=lambda x: want[x])
                    for p in range(pipelines)}
        for s in names:
            d = want[s] - have[s]
            if not d:
                continue
            req = StageRequest(s, add=max(d, 0), remove=max(-d, 0), critical=s in critical,
                               bytes=nbytes)
            for action, node in choose(strategy, cl, req, pick, cfg):
                if node is None:
                    failed += 1
                    continue
                if action == "remove":
                    cl.remove(node, s)
                    have[s] -= 1
                else:
                    spawn = spawn_seconds(cl.nodes[node], req, cfg)
                    tiers.append(cl.add(node, s, nbytes))
                    times.append(spawn)
                    have[s] += 1
        orphaned += cl.orphaned_by_one_failure(names)
    return {"strategy": strategy, "spawns": len(tiers),
            "warm_share": sum(t in ("T0", "T1") for t in tiers) / max(1, len(tiers)),
            "mean_spawn_s": statistics.fmean(times) if times else 0.0,
            "orphaned_stage_failures": orphaned, "unplaced": failed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--pipelines", type=int, default=4)
    ap.add_argument("--stages", type=int, default=4, help="stages per pipeline")
    ap.add_argument("--periods", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--stage-gib", type=float, default=0.3, help="T1 bytes per stage")
    ap.add_argument("--node-gib", type=float, default=1.2, help="memory_threshold per node")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    rows = []
    for strategy in ("cache-aware", "random", "least-loaded"):
        runs = [run(strategy, a.nodes, a.pipelines, a.stages, a.periods, seed, a.stage_gib,
                    a.node_gib) for seed in range(a.seeds)]
        rows.append({k: (statistics.fmean(r[k] for r in runs) if k != "strategy" else strategy)
                     for k in runs[0]})
    print(f"{a.nodes} nodes ({a.node_gib:g} GiB T1 each), {a.pipelines} pipelines x {a.stages} "
          f"stages ({a.stage_gib:g} GiB each), {a.periods} periods, {a.seeds} seeds; spawn "
          f"model {TIER_SPAWN_S}")
    print(f"{'strategy':<14}{'spawns':>8}{'T0/T1 share':>13}{'mean spawn s':>14}"
          f"{'orphaned*':>11}{'unplaced':>10}")
    for r in rows:
        print(f"{r['strategy']:<14}{r['spawns']:>8.0f}{r['warm_share']:>13.1%}"
              f"{r['mean_spawn_s']:>14.3f}{r['orphaned_stage_failures']:>11.1f}"
              f"{r['unplaced']:>10.1f}")
    print("* (period, failed node, stage) triples where one node failure leaves a stage with "
          "no replica, summed over the run (mean over seeds)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
