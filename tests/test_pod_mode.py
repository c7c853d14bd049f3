"""Pod mode behind the real of-watchdog: a zygote in the pod forks workers on one socket.

Each pod is the upstream fwatchdog in front of ``python index.py`` with QUART_POD_WORKERS
set, in its own network namespace and CPU cgroup (local_provider/pods.py), reached at its
own IP:8080 as the gateway reaches a pod. The stage is the last of all-MiniLM-L6-v2 cut in
three (real weights); the echo handler (no torch) serves where only the pod matters.
"""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from local_provider.pods import Pod, PodRunner
from tests.conftest import require_tool
from tests.pod_env import (
    AUTH,
    ECHO,
    STAGE,
    alive,
    make_runner,
    metric,
    post_stage,
    set_workers,
    stage_body,
    start_pod,
    template_module,
    wait_until,
    worker_pids,
    worker_pids_str,
    workers,
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Iterator[PodRunner]:
    r = make_runner(tmp_path_factory.mktemp("pods"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def stage_pod(runner, minilm3) -> Iterator[Pod]:
    pod = start_pod(runner, "minilm-2", STAGE, {
        "QUART_MODEL_DIR": str(minilm3), "QUART_STAGE": "2", "QUART_TORCH_THREADS": "1",
        "QUART_POD_WORKERS": "2", "QUART_POD_MAX_WORKERS": "4"})
    yield pod
    pod.stop(2)


@pytest.fixture(scope="module")
def body(minilm3) -> bytes:
    return stage_body(minilm3, 2)


def test_a_pod_serves_the_stage_through_the_real_watchdog(stage_pod, body):
    r = post_stage(stage_pod.url, body)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["embeddings"]) == 2
    assert "X-Duration-Seconds" in r.headers  # the watchdog's own: it was in the path
    state = workers(stage_pod)
    assert state == {"workers": 2, "ready": 2, "busy": 0, "pid": state["pid"]}
    # one pod, one cgroup: the watchdog (the container's PID 1), the zygote, two workers
    pids = set(stage_pod.pids())
    assert {stage_pod.pid, state["pid"]} <= pids and len(pids) == 4
    assert int(r.headers["X-Quart-Worker"]) in pids - {stage_pod.pid, state["pid"]}
    assert metric(stage_pod, "quart_pod_workers") == 2
    assert metric(stage_pod, "quart_pod_worker_spawn_seconds_count") >= 2
    text = requests.get(stage_pod.url + "/_/quart/metrics", timeout=10).text
    lint = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=30, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr  # what Prometheus will scrape


@pytest.mark.parametrize("way_in", ["url", "control_url"])  # the watchdog's, the zygote's
def test_control_endpoint_refuses_bad_callers_and_bad_bodies(stage_pod, way_in):
    url = getattr(stage_pod, way_in) + "/_/quart/workers"
    r = requests.get(url, timeout=10)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer wrong", "Basic cG9kLXRlc3QtdG9rZW4=", "pod-test-token", ""):
        r = requests.put(url, json={"workers": 3}, headers={"Authorization": header}, timeout=10)
        assert r.status_code == 401, (header, r.text)
    for bad in (b"{oops", b"[]", b'{"workers": 0}', b'{"workers": 5}', b'{"workers": "3"}',
                b'{"workers": true}', b'{"workers": 2.0}', b'{"workers": 3, "x": 1}', b"",
                b'{"workers": null}', "\u00ff".encode("latin-1")):
        r = requests.put(url, data=bad, headers=AUTH, timeout=10)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json" and r.json()["error"]
    assert "1..4" in requests.put(url, json={"workers": 9}, headers=AUTH, timeout=10).text
    r = requests.delete(url, headers=AUTH, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, PUT"
    assert requests.get(getattr(stage_pod, way_in) + "/_/quart/nope", headers=AUTH, timeout=10
                        ).status_code == 404
    assert workers(stage_pod)["workers"] == 2  # nothing above changed anything


def test_workers_answer_bitwise_like_the_first_worker(stage_pod, body):
    first = post_stage(stage_pod.url, body)
    assert set_workers(stage_pod, 4) == {"workers": 4, "ready": 4, "busy": 0,
                                         "pid": workers(stage_pod)["pid"]}
    seen: dict[str, bytes] = {}
    with ThreadPoolExecutor(4) as ex:  # concurrent: each worker takes one connection
        for _ in range(10):
            for r in ex.map(lambda _: post_stage(stage_pod.url, body), range(8)):
                assert r.status_code == 200, r.text[:300]
                seen.setdefault(r.headers["X-Quart-Worker"], r.content)
                assert r.content == first.content  # bitwise, every answer of every worker
            if len(seen) == 4:
                break
    assert len(seen) == 4, f"the kernel gave connections to {len(seen)} of 4 workers"
    assert set_workers(stage_pod, 2)["ready"] == 2


def test_a_killed_worker_is_replaced(stage_pod, body):
    # the workers retired by the last PUT stopped accepting before it answered; they exit
    # once their connections are done
    before = wait_until(lambda: (p := worker_pids(stage_pod)) and len(p) == 2 and p, 5,
                        "two workers")
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), 5, "killed")
    after = wait_until(lambda: (p := worker_pids(stage_pod)) and len(p) == 2 and victim not in p
                       and workers(stage_pod)["ready"] == 2 and p, 10, "replaced")
    assert len(after - before) == 1
    assert metric(stage_pod, "quart_pod_worker_restarts_total") >= 1
    for _ in range(4):
        assert post_stage(stage_pod.url, body).status_code == 200


def test_resize_cpu_sets_the_quota_the_pod_reads(stage_pod):
    pids = set(stage_pod.pids())
    stage_pod.resize_cpu(250)
    quota = stage_pod.cgroup / ("cpu.cfs_quota_us" if (stage_pod.cgroup / "cpu.cfs_quota_us")
                                .exists() else "cpu.max")
    assert quota.read_text().split()[0] == "25000"
    assert metric(stage_pod, "quart_pod_cpu_limit_cores") == 0.25  # read inside the pod
    stage_pod.resize_cpu(None)
    assert metric(stage_pod, "quart_pod_cpu_limit_cores") == -1
    assert set(stage_pod.pids()) == pids  # in place: no process restarted


@pytest.fixture()
def echo_pod(runner, request) -> Iterator[Pod]:
    """Two workers of the echo handler (no torch: starts in a fraction of a second)."""
    token = getattr(request, "param", "pod-test-token")
    pod = start_pod(runner, f"echo-{os.getpid()}", ECHO,
                    {"QUART_PRELOAD": "", "QUART_POD_WORKERS": "2"}, token=token)
    yield pod
    pod.stop(2)


def test_a_busy_worker_takes_no_connection_while_another_is_idle(echo_pod):
    """The socket's backlog is the pod's one queue: a request goes to an idle worker, never
    behind a busy one (each worker accepts one connection at a time)."""
    with ThreadPoolExecutor(1) as ex:
        slow = ex.submit(requests.get, echo_pod.url, params={"sleep_ms": 800}, timeout=10)
        wait_until(lambda: workers(echo_pod)["busy"] == 1, 5, "one worker busy")
        quick = [requests.get(echo_pod.url, timeout=10) for _ in range(8)]
        busy = slow.result().headers["X-Quart-Worker"]
    assert all(r.status_code == 200 for r in quick)
    assert {r.headers["X-Quart-Worker"] for r in quick} == worker_pids_str(echo_pod) - {busy}


@pytest.mark.parametrize("echo_pod", [None], indirect=True)
def test_no_token_file_no_control_endpoint_and_the_pod_still_serves(echo_pod):
    for method in ("GET", "PUT"):
        r = requests.request(method, echo_pod.url + "/_/quart/workers", json={"workers": 1},
                             headers=AUTH, timeout=10)
        assert r.status_code == 404 and "quart-control-token" in r.json()["error"]
    assert requests.post(echo_pod.url, params={"status": "201"}, timeout=10).status_code == 201
    assert metric(echo_pod, "quart_pod_workers_ready") == 2  # metrics need no token


def test_kill9_of_the_zygote_ends_the_watchdog_and_every_worker(echo_pod):
    zygote = workers(echo_pod)["pid"]
    children = worker_pids(echo_pod)
    assert len(children) == 2 and all(alive(p) for p in children)
    os.kill(zygote, signal.SIGKILL)
    wait_until(lambda: not echo_pod.alive(), 10, "the watchdog gone")  # so the pod restarts
    wait_until(lambda: not any(alive(p) for p in children), 5, "every worker gone")
    assert echo_pod.pids() == []  # nothing of the pod's left in its cgroup
    assert echo_pod.returncode() != 0
    assert "Forked function has terminated" in Path(echo_pod.log).read_text()


def test_pod_mode_settings_are_checked_at_start(tmp_path):
    """A bad setting stops the pod with the variable named, before it serves."""
    cfg_mod = template_module("quart_pod.config")
    for env, needle in (({"QUART_POD_WORKERS": "x"}, "QUART_POD_WORKERS='x'"),
                        ({"QUART_POD_WORKERS": "0"}, "QUART_POD_WORKERS=0"),
                        ({"QUART_POD_WORKERS": "5", "QUART_POD_MAX_WORKERS": "4"}, "exceeds"),
                        ({"QUART_POD_WORKERS": "1", "QUART_POD_DRAIN_S": "nan"}, "DRAIN")):
        with pytest.raises(cfg_mod.PodConfigError, match=needle):
            cfg_mod.PodConfig.from_env(env)
    cfg = cfg_mod.PodConfig.from_env({"QUART_POD_WORKERS": "2", "QUART_SECRETS_DIR": str(tmp_path)})
    assert cfg.token_file == tmp_path / "quart-control-token"
    assert cfg_mod.PodConfig.from_env({"QUART_POD_WORKERS": "1"}).token_file == \
        Path("/var/openfaas/secrets/quart-control-token")
    assert not cfg_mod.enabled({"QUART_POD_WORKERS": " "}) and cfg_mod.enabled(
        {"QUART_POD_WORKERS": "1"})
