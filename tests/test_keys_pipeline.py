"""The deployed MiniLM pipeline scales by fork: `quart-faas up` with the default launcher,
keys_manager started by the provider, scale requests through the gateway."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from keys_manager.client import call
from local_provider.deploy import wait_available
from tests import pipeline_env

FN = ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]


@pytest.fixture(scope="module")
def dep(minilm3, tmp_path_factory):
    state = tmp_path_factory.mktemp("kp")
    d = pipeline_env.up(state, minilm3)
    yield d
    agent = json.loads((state / "keys" / "agent.json").read_text())
    assert pipeline_env.cli(["down", "--state-dir", str(state)], d.env).returncode == 0
    time.sleep(0.5)
    for fn in FN:
        assert pipeline_env.replica_pids(fn, d.gateway) == [], \
            f"{fn}: replicas or zygote left behind"
    assert not Path(f"/proc/{agent['pid']}").exists() or \
        Path(f"/proc/{agent['pid']}/stat").read_text().split()[2] == "Z"
    assert not Path(agent["shm_dir"]).exists(), "T1 segments leaked in /dev/shm"
    assert not list((state / "keys" / "zygotes").glob("*.sock"))


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def instances(dep, fn: str) -> list[dict]:
    stats = json.loads((dep.state / "serve.json").read_text())
    r = requests.get(f"{stats['provider_url']}/system/quart/stats", auth=dep.auth, timeout=5)
    r.raise_for_status()
    return sorted(r.json()[fn]["instances"], key=lambda i: i["index"])


def agent_status(dep) -> dict:
    return call(dep.state / "keys_manager.sock", {"op": "status"})["status"]


def embed(dep, text="same answer"):
    r = requests.post(f"{dep.gateway}/function/{FN[0]}", json={"inputs": [text]}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["embeddings"]


def scale(dep, fn: str, n: int, timeout: float = 120) -> None:
    r = requests.post(f"{dep.gateway}/system/scale-function/{fn}", auth=dep.auth, timeout=5,
                      json={"serviceName": fn, "replicas": n})
    assert r.status_code in (200, 202), r.text
    wait_available(dep.gateway, dep.auth, {fn: n}, timeout)


def test_scale_1_to_4_forks_replicas_that_answer_identically(dep):
    first = embed(dep)
    scale(dep, FN[1], 4)
    inst = instances(dep, FN[1])
    assert len(inst) == 4 and all(i["ready"] for i in inst)
    zygote = inst[0]["zygote_pid"]
    assert [i["tier"] for i in inst[1:]] == ["T0"] * 3  # forked from the warm zygote
    assert all(i["zygote_pid"] == zygote and ppid(i["pid"]) in (zygote, 1) for i in inst)
    assert all(isinstance(i["ready_ms"], float) for i in inst)
    answers = {json.dumps(embed(dep)) for _ in range(12)}
    assert answers == {json.dumps(first)}
    st = agent_status(dep)
    assert st["cache"]["pinned"]["all-MiniLM-L6-v2--stage-1"] == 4
    scale(dep, FN[1], 1)
    deadline = time.monotonic() + 10
    while agent_status(dep)["cache"]["pinned"].get("all-MiniLM-L6-v2--stage-1") != 1:
        assert time.monotonic() < deadline, agent_status(dep)["cache"]["pinned"]
        time.sleep(0.1)


def test_kill9_of_keys_manager_and_zygote_serving_goes_on(dep):
    before = embed(dep, "still serving")
    agent = json.loads((dep.state / "keys" / "agent.json").read_text())["pid"]
    os.kill(agent, signal.SIGKILL)
    zyg = instances(dep, FN[2])[0]["zygote_pid"]
    os.kill(zyg, signal.SIGKILL)
    time.sleep(0.3)
    assert embed(dep, "still serving") == before  # replicas outlive both
    scale(dep, FN[2], 2)  # the provider restarts the agent, which rebuilds the zygote
    inst = instances(dep, FN[2])
    assert inst[1]["tier"] == "T1" and inst[1]["zygote_pid"] != zyg
    new_agent = json.loads((dep.state / "keys" / "agent.json").read_text())["pid"]
    assert new_agent != agent
    assert {r["pid"] for r in agent_status(dep)["replicas"]} >= {i["pid"] for i in inst}
    assert embed(dep, "still serving") == before


def test_corrupt_segment_is_rebuilt_and_the_pipeline_heals(dep):
    before = embed(dep, "heal")
    old = instances(dep, FN[0])[0]["pid"]
    [old_seg] = [r["segment"] for r in agent_status(dep)["replicas"] if r["pid"] == old]
    seg = Path(agent_status(dep)["shm_dir"]) / "all-MiniLM-L6-v2--stage-0.safetensors"
    with open(seg, "r+b") as f:
        f.seek(seg.stat().st_size - 4096)
        f.write(os.urandom(64))
    rebuilt = call(dep.state / "keys_manager.sock", {"op": "scrub"}, 120)["rebuilt"]
    assert rebuilt == ["all-MiniLM-L6-v2--stage-0"]
    deadline = time.monotonic() + 120  # the recycled replica is replaced by the provider
    while not [i for i in instances(dep, FN[0]) if i["ready"] and i.get("pid") != old]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    healed = instances(dep, FN[0])[0]
    assert healed["tier"] == "T1"  # from a new zygote on the rebuilt segment
    [seg_now] = [r["segment"] for r in agent_status(dep)["replicas"] if r["pid"] == healed["pid"]]
    assert seg_now != old_seg
    assert embed(dep, "heal") == before
