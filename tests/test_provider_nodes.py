"""Several simulated nodes (one keys_manager each) under the local provider: replicas placed
cache-aware and spread, constraints honoured, and a node failure survived."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from local_provider.deploy import wait_available
from tests import pipeline_env

REPO = Path(__file__).resolve().parents[1]
FN = ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]


def stack(root: Path) -> Path:
    """stack.yml plus a pinned function (constraints: the faas-cli way)."""
    import yaml

    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    doc["functions"]["pinned"] = {
        "lang": "quart-python", "handler": str(REPO / "tests" / "fixtures" / "echo"),
        "image": "echo:test", "environment": {"QUART_PRELOAD": ""},
        "constraints": ["kubernetes.io/hostname=c"]}
    for f in doc["functions"].values():
        if f["handler"].startswith("./"):
            f["handler"] = str(REPO / f["handler"][2:])
    (root / "template").symlink_to(REPO / "template")
    p = root / "stack.yml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))  # file order: minilm stays first
    return p


@pytest.fixture(scope="module")
def dep(minilm3, tmp_path_factory):
    root = tmp_path_factory.mktemp("nodes")
    d = pipeline_env.up(root / "state", minilm3, stack(root),
                        {"QUART_NODES": "a:256MiB,b:256MiB,c:256MiB"})
    yield d
    shm = [n["shm_dir"] for n in nodes_agents(d)]
    assert pipeline_env.cli(["down", "--state-dir", str(d.state)], d.env).returncode == 0
    time.sleep(0.5)
    for fn in FN + ["pinned"]:
        assert pipeline_env.replica_pids(fn, d.gateway) == [], f"{fn}: left behind"
    assert not [s for s in shm if Path(s).exists()], "a node's /dev/shm directory leaked"


def nodes_agents(dep) -> list[dict]:
    out = []
    for f in sorted((dep.state / "nodes").glob("*/keys/agent.json")):
        out.append(json.loads(f.read_text()))
    return out


def instances(dep, fn: str) -> list[dict]:
    r = requests.get(f"{dep.gateway}/system/quart/stats", auth=dep.auth, timeout=5)
    return [i for i in r.json()[fn]["instances"] if i.get("ready")]


def scale(dep, fn: str, n: int) -> None:
    requests.post(f"{dep.gateway}/system/scale-function/{fn}", auth=dep.auth, timeout=5,
                  json={"serviceName": fn, "replicas": n}).raise_for_status()
    wait_available(dep.gateway, dep.auth, {fn: n}, 120)


def embed(dep) -> list:
    r = requests.post(f"{dep.gateway}/function/{FN[0]}", json={"inputs": ["spread"]}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["embeddings"]


def test_replicas_spread_over_nodes_and_constraints_hold(dep):
    nodes = requests.get(f"{dep.gateway}/system/quart/nodes", auth=dep.auth, timeout=5).json()
    assert [n["name"] for n in nodes] == ["a", "b", "c"] and all(n["up"] for n in nodes)
    scale(dep, FN[1], 3)
    where = [i["node"] for i in instances(dep, FN[1])]
    assert len(set(where)) >= 2, where  # never all replicas of a stage on one node
    assert all("KL after" in i["placement"] for i in instances(dep, FN[1]))
    scale(dep, "pinned", 2)
    assert {i["node"] for i in instances(dep, "pinned")} == {"c"}


def test_a_node_failure_leaves_every_stage_serving(dep):
    for fn in FN:
        scale(dep, fn, 2)
    before = embed(dep)
    spread = {fn: {i["node"] for i in instances(dep, fn)} for fn in FN}
    assert all(len(s) == 2 for s in spread.values()), spread
    victim = "a"
    r = requests.post(f"{dep.gateway}/system/quart/nodes/{victim}/fail", auth=dep.auth,
                      timeout=30)
    assert r.status_code == 200 and r.json()["killed"]
    time.sleep(0.5)
    assert embed(dep) == before  # every stage still has a replica elsewhere
    deadline = time.monotonic() + 120  # the provider replaces what the node took with it
    while time.monotonic() < deadline:
        now = {fn: [i["node"] for i in instances(dep, fn)] for fn in FN}
        if all(len(v) == 2 and victim not in v for v in now.values()):
            break
        time.sleep(0.3)
    assert all(len(v) == 2 and victim not in v for v in now.values()), now
    assert embed(dep) == before
    r = requests.post(f"{dep.gateway}/system/quart/nodes/zz/fail", auth=dep.auth, timeout=5)
    assert r.status_code == 404 and "nodes" in r.json()["error"]
