"""benchmark.placement compares strategies under the same hard rules (memory fit, and a
stage's second replica never on the only node it runs on), so its figures measure the
cache and KL terms rather than a rule the baselines lack."""
from __future__ import annotations

import random

import pytest

from benchmark.studies.placement import Cluster, choose
from placement import Node, PlacementConfig, StageRequest

GiB = 1 << 30


@pytest.mark.parametrize("strategy", ["cache-aware", "random", "least-loaded"])
def test_every_strategy_puts_the_second_replica_on_another_node(strategy: str) -> None:
    for seed in range(20):
        nodes = {f"n{i}": Node(f"n{i}", 4 * GiB) for i in range(4)}
        cl = Cluster(nodes)
        cl.add("n0", "s", GiB // 4)  # one replica, on n0, which is also the least loaded
        for other in ("n1", "n2", "n3"):
            cl.add(other, f"x-{other}", GiB // 4)
            cl.add(other, f"y-{other}", GiB // 4)
        out = choose(strategy, cl, StageRequest("s", add=1, bytes=GiB // 4),
                     random.Random(seed), PlacementConfig())
        assert out == [("add", out[0][1])] and out[0][1] != "n0", (strategy, seed, out)
