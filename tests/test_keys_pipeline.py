"""Replicas forked from a warm zygote (QUART_LAUNCHER=fork), on the real MiniLM pipeline."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from quart_faas.deploy import wait_available
from tests import pipeline_env

FN = ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]


@pytest.fixture(scope="module")
def dep(minilm3, tmp_path_factory):
    state = tmp_path_factory.mktemp("fork-state")
    old = os.environ.get("QUART_LAUNCHER")
    os.environ["QUART_LAUNCHER"] = "fork"
    try:
        d = pipeline_env.up(state, minilm3)
    finally:
        if old is None:
            os.environ.pop("QUART_LAUNCHER")
        else:
            os.environ["QUART_LAUNCHER"] = old
    yield d
    assert pipeline_env.cli(["down", "--state-dir", str(state)], d.env).returncode == 0
    time.sleep(0.5)
    for fn in FN:
        assert pipeline_env.replica_pids(fn) == [], f"{fn}: replicas or zygote left behind"
    assert not list((state / "zygotes").glob("*.sock"))


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def zygotes(dep, fn: str) -> list[int]:
    """Forked replicas inherit the zygote's environment; the zygote is the provider's child."""
    provider = json.loads((dep.state / "run" / "gateway.json").read_text())["pid"]
    return [p for p in pipeline_env.replica_pids(fn) if ppid(p) == provider]


def embed(dep, text="same answer"):
    r = requests.post(f"{dep.gateway}/function/{FN[0]}", json={"inputs": [text]}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["embeddings"]


def test_scale_up_forks_replicas_from_the_zygote(dep):
    first = embed(dep)
    zygote = zygotes(dep, FN[1])
    assert len(zygote) == 1
    t0 = time.perf_counter()
    r = requests.post(f"{dep.gateway}/system/scale-function/{FN[1]}", auth=dep.auth, timeout=5,
                      json={"serviceName": FN[1], "replicas": 4})
    assert r.status_code in (200, 202)
    wait_available(dep.gateway, dep.auth, {FN[1]: 4}, 60)
    ready_s = time.perf_counter() - t0
    replicas = [p for p in pipeline_env.replica_pids(FN[1]) if p != zygote[0]]
    assert len(replicas) == 4
    assert all(ppid(p) == zygote[0] for p in replicas), "every replica is a child of the zygote"
    assert ready_s < 5, f"3 forked replicas took {ready_s:.2f}s to be ready"
    answers = {json.dumps(embed(dep)) for _ in range(12)}
    assert answers == {json.dumps(first)}


def test_killed_zygote_is_rebuilt_and_replicas_keep_serving(dep):
    zygote = zygotes(dep, FN[2])
    assert len(zygote) == 1
    os.kill(zygote[0], signal.SIGKILL)
    time.sleep(0.5)
    assert len(embed(dep, "still serving")) == 1  # the forked replica did not die with it
    requests.post(f"{dep.gateway}/system/scale-function/{FN[2]}", auth=dep.auth, timeout=5,
                  json={"serviceName": FN[2], "replicas": 2}).raise_for_status()
    wait_available(dep.gateway, dep.auth, {FN[2]: 2}, 120)
    new = zygotes(dep, FN[2])
    assert len(new) == 1 and new != zygote
    assert len(embed(dep, "after the rebuild")) == 1
