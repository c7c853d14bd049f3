"""Cache-aware KL-dispersed placement (pure policy), with hand-checked cases."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from placement import (
    Node,
    PlacementConfig,
    StageRequest,
    kl,
    parse_constraint,
    place,
    satisfies,
)

GiB = 1 << 30


def nodes(k: int, **kw) -> list[Node]:
    return [Node(f"n{i}", 4 * GiB, labels={"kubernetes.io/hostname": f"n{i}", "zone": "a" if
                                           i % 2 else "b"}, **kw) for i in range(k)]


def test_kl_hand_values():
    # p = (1, 0) vs q = (1/2, 1/2): with EPS smoothing ~ log 2 = 0.693
    assert kl([1, 0], [1, 1]) == pytest.approx(math.log(2), abs=0.01)
    assert kl([1, 1], [1, 1]) == pytest.approx(0.0, abs=1e-9)
    assert kl([2, 1], [2, 1]) == pytest.approx(0.0, abs=1e-6)


def test_prefers_a_warm_node():
    ns = nodes(3)
    ns[2] = Node("n2", 4 * GiB, cached={"s": "T0"}, stage_bytes={"s": GiB})
    [p] = place(ns, [StageRequest("s", add=1, bytes=GiB)])
    assert p.node == "n2" and p.tier == "T0" and "spawn ~40 ms" in p.reason


def test_replicas_are_dispersed_and_never_all_on_one_node():
    ns = nodes(4)
    ns[0] = Node("n0", 4 * GiB, cached={"s": "T0"}, stage_bytes={"s": GiB}, replicas={"s": 1})
    out = place(ns, [StageRequest("s", add=3, bytes=GiB)])
    where = Counter(p.node for p in out) + Counter({"n0": 1})
    assert len(where) >= 2 and max(where.values()) <= 2  # spread, a node failure leaves some
    # the second replica may not join the first on n0 even though n0 is warm (T0)
    assert out[0].node != "n0"


def test_critical_stage_weighs_spawn_time_more():
    # 3 replicas on n0, 1 on n1 (both warm), n2/n3 cold.  Normalised over the candidates
    # the warm n1 has spawn 0 but the worse spread (KL (3,2,0,0) 0.713 vs (3,1,1,0) 0.436
    # nats -> 1 vs 0), the cold nodes the reverse: non-critical 0.4*0 + 0.6*1 = 0.6 > 0.4
    # picks a cold node; critical 0.7*0 + 0.3*1 = 0.3 < 0.7 picks n1.
    base = [Node("n0", 4 * GiB, replicas={"s": 3}, cached={"s": "T0"}, stage_bytes={"s": GiB}),
            Node("n1", 4 * GiB, replicas={"s": 1}, cached={"s": "T0"}, stage_bytes={"s": GiB}),
            Node("n2", 4 * GiB), Node("n3", 4 * GiB)]
    [calm] = place(base, [StageRequest("s", add=1, bytes=GiB)])
    [hot] = place(base, [StageRequest("s", add=1, bytes=GiB, critical=True)],
                  PlacementConfig())
    assert calm.node in ("n2", "n3") and calm.tier == "T3"
    assert hot.node == "n1" and hot.tier == "T0" and hot.reason.startswith("critical")


def test_memory_threshold_and_evictable_stages():
    full = Node("n0", 2 * GiB, used_bytes=2 * GiB, cached={"x": "T1"}, stage_bytes={"x": 2 * GiB},
                replicas={"x": 1})
    roomy = Node("n1", 2 * GiB, used_bytes=2 * GiB, cached={"y": "T1"},
                 stage_bytes={"y": 2 * GiB})  # y has no replica: evictable
    [p] = place([full, roomy], [StageRequest("s", add=1, bytes=GiB)])
    assert p.node == "n1"
    [p] = place([full], [StageRequest("s", add=1, bytes=GiB)])
    assert p.node is None and "memory_threshold" in p.reason


def test_constraints_filter_nodes():
    assert parse_constraint("zone==a") == ("zone", "==", "a")
    assert parse_constraint("kubernetes.io/hostname=n1") == ("kubernetes.io/hostname", "==", "n1")
    with pytest.raises(ValueError):
        parse_constraint("nonsense")
    ns = nodes(4)
    out = place(ns, [StageRequest("s", add=2, constraints=("zone=a",))])
    assert {p.node for p in out} <= {"n1", "n3"} and all(satisfies(ns[1], ("zone!=b",)) for _ in
                                                          out)
    [p] = place(ns, [StageRequest("s", add=1, constraints=("zone=mars",))])
    assert p.node is None and "constraints" in p.reason


def test_removal_takes_from_the_most_overrepresented_node_and_down_nodes_first():
    ns = [Node("n0", GiB, replicas={"s": 3}), Node("n1", GiB, replicas={"s": 1}),
          Node("n2", GiB, replicas={"s": 1}, up=False)]
    out = place(ns, [StageRequest("s", remove=2)])
    assert [p.node for p in out] == ["n2", "n0"]


def test_losing_any_node_leaves_every_stage_serving():
    """12 nodes, 4 pipelines x 4 stages, 2-3 replicas each, added one stage at a time."""
    ns = nodes(12)
    reqs = [StageRequest(f"p{p}-s{s}", add=2 + (p + s) % 2, bytes=GiB // 4, critical=s == 1)
            for p in range(4) for s in range(4)]
    out = place(ns, reqs)
    assert all(p.node for p in out)
    per_stage: dict[str, set[str]] = {}
    for p in out:
        per_stage.setdefault(p.stage, set()).add(p.node)
    for n in (x.name for x in ns):
        assert all(holders - {n} for holders in per_stage.values()), f"losing {n} kills a stage"


def test_simulated_cluster_cache_aware_vs_baselines_same_demand():
    from benchmark.studies.placement import run

    rows = {s: run(s, 12, 4, 4, 40, seed=0, stage_gib=0.3, node_gib=1.2)
            for s in ("cache-aware", "random", "least-loaded")}
    assert len({r["spawns"] for r in rows.values()}) == 1  # identical demand
    assert rows["cache-aware"]["orphaned_stage_failures"] == 0
    assert rows["random"]["orphaned_stage_failures"] > 0
    assert rows["cache-aware"]["warm_share"] > rows["random"]["warm_share"]
    assert rows["cache-aware"]["mean_spawn_s"] < rows["least-loaded"]["mean_spawn_s"]
