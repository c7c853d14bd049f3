"""The whole pod path under a burst, real processes only: `quart-faas up` with
QUART_LAUNCHER=pod (each replica a pod: the upstream fwatchdog + index.py in pod mode, its
own netns and CPU cgroup), Prometheus, a redis-server, and `python -m gateway_plugin` with
QUART_ACTUATOR=pods (benchmark/live/pods.py).  The stage is the emulated BERT-large stage:
its forward pass sleeps on an emulated device, so workers are capacity on 2 cores.

The pod starts at 1 worker with limits.cpu 500m; the plugin's CPU per worker is 250m and a
pod holds 3 workers at most.  So the fastest means with room are, in order: a 2nd worker
by fork (500m covers it), a 3rd after resizing the pod's cgroup to 750m in place, and only
then a 2nd pod.  The test watches the pods from outside (their listing, their control
endpoints, their cgroups) and checks the plugin's decision records against what it saw.
"""
from __future__ import annotations

import os

import pytest

from benchmark.live.pods import RigConfig, burst_offsets, pod_rig
from tests.conftest import openfaas_bin, require_tool, skip_outside_ci

CFG = RigConfig()  # 1 stage, 500m floor, 250m per worker, 3 workers and 3 pods at most


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    openfaas_bin("fwatchdog")  # the provider finds it the same way (QUART_OPENFAAS_BIN)
    require_tool("ip"), require_tool("nsenter"), require_tool("redis-server")
    require_tool("prometheus")
    if os.geteuid() != 0:
        skip_outside_ci("pods need root (a network namespace and a cgroup each)")
    offsets = burst_offsets(2.0, 16.0, 2.0, 16.0, 2.0, cv=2.0, seed=5)
    with pod_rig(CFG, tmp_path_factory.mktemp("pod-burst")) as rig:
        start, results = rig.send(offsets)
        assert rig.watcher is not None
        samples = list(rig.watcher.samples)
        decisions = [d for d in rig.decisions() if d.get("function")]
    return start, results, samples, decisions


def test_every_request_is_served(burst):
    _, results, _, _ = burst
    assert results and sum(r.status == 200 for r in results) == len(results), \
        {r.status or r.error for r in results}


def test_workers_are_forked_and_cpu_resized_in_the_running_pod(burst):
    _, _, samples, decisions = burst
    first = min(samples, key=lambda s: s.t).pod
    mine = [s for s in samples if s.pod == first and s.workers is not None]
    assert mine[0].workers == 1 and mine[0].cpu_millis == CFG.limit_cpu_millis
    assert {s.zygote for s in mine} == {mine[0].zygote}  # one zygote: nothing restarted
    assert max(s.workers for s in mine) == CFG.max_workers  # forked up to its maximum
    # CPU before a fork, fewer workers before less CPU: a worker never runs without its
    # 250m, nor the pod below its own limits.cpu
    per_worker = round(CFG.worker_cpu * 1000)
    for s in mine:
        assert s.cpu_millis >= max(CFG.limit_cpu_millis, s.workers * per_worker), s
    full = next(s for s in mine if s.workers == CFG.max_workers)
    assert full.cpu_millis > CFG.limit_cpu_millis  # resized in place, same zygote
    assert all(d["actuator"] == "pods" for d in decisions)
    notes = " | ".join(d["actuation"] for d in decisions)
    assert "worker(s) in pods with CPU room" in notes  # speed 1: a plain fork
    assert "worker(s) after an in-place CPU resize" in notes  # speed 2
    assert any(d["speeds"][:2] == ["workers", "cpu"] for d in decisions), notes


def test_a_new_pod_only_once_the_pod_is_full(burst):
    _, _, samples, decisions = burst
    first = min(samples, key=lambda s: s.t).pod
    others = [s for s in samples if s.pod != first]
    assert others, "the burst never needed a 2nd pod"
    t_new = min(s.t for s in others)
    full = [s.t for s in samples if s.pod == first and s.workers == CFG.max_workers]
    assert full and min(full) <= t_new  # the pod held 3 workers before a 2nd pod existed
    grew = next(d for d in decisions if "pods" in d["speeds"])
    assert "pods 1->" in grew["actuation"], grew
    # workers were used first: in an earlier decision, or earlier in the same plan
    upto = [d for d in decisions if d["t"] <= grew["t"]]
    assert any("workers" in d["speeds"] for d in upto), upto
    assert grew["actuation"].index("pods 1->") > grew["actuation"].find("worker(s) in")
