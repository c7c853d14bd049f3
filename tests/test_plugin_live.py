"""The plugin on real parts: `quart-faas up` (gateway, provider, forked replicas, Prometheus),
a real redis-server, and `python -m gateway_plugin` as its own process.

The pipeline is three relay stages (tests/fixtures/relay) whose service time is a
sleep, one request at a time per replica: stage b (100 ms) is the bottleneck by
construction, and the two CPU cores of the test machine do not decide the outcome.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmark import openloop
from local_provider import services
from tests import pipeline_env
from tests.redis_env import RedisServer

REPO = Path(__file__).resolve().parents[1]
RELAY = REPO / "tests" / "fixtures" / "relay"
FN = ["relay-a", "relay-b", "relay-c"]
SLEEP_MS = [10, 100, 10]
PERIOD = 2.0


def stack(root: Path) -> Path:
    (root / "template").symlink_to(REPO / "template")
    fns = {}
    for i, name in enumerate(FN):
        fns[name] = {
            "lang": "quart-python", "handler": str(RELAY), "image": "relay:test",
            "environment": {"QUART_PRELOAD": "", "QUART_SLEEP_MS": str(SLEEP_MS[i]),
                            "QUART_NEXT_FUNCTION": FN[i + 1] if i + 1 < len(FN) else "",
                            "max_inflight": "1"},
            "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "5"},
            "annotations": {"com.openfaas.quart.pipeline": "relay",
                            "com.openfaas.quart.stage": str(i),
                            "com.openfaas.quart.stages": str(len(FN)),
                            "com.openfaas.quart.slo": "0.3"}}
    p = root / "stack.yml"
    p.write_text(json.dumps({"version": 1.0, "provider": {"name": "openfaas"}, "functions": fns}))
    return p


class Plugin:
    def __init__(self, dep, redis_url: str, root: Path) -> None:
        self.auth = dep.auth  # the plugin's doors take the gateway's credentials
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"plugin-{self.port}.log"
        self.env = {**os.environ, "OPENFAAS_URL": dep.gateway, "PROMETHEUS_URL": dep.prometheus,
                    "REDIS_URL": redis_url,
                    "QUART_BASIC_AUTH_PASSWORD_FILE": str(dep.state / "basic-auth-password"),
                    "QUART_CONTROL_PERIOD_S": str(PERIOD), "QUART_PLUGIN_PORT": str(self.port),
                    "QUART_SCALE_DOWN_PERIODS": "2", "QUART_TRAIN_EVERY": "0",
                    "QUART_CPU_COMPENSATION": "0"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Plugin:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway_plugin"], env=self.env,
                                         cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        assert services.wait_http(self.url + "/livez", 30, lambda: self.proc.poll() is None), \
            self.log.read_text()
        return self

    def health(self) -> dict:
        return requests.get(self.url + "/healthz", timeout=5).json()

    def decisions(self, n: int = 200) -> list[dict]:
        return requests.get(self.url + "/decisions", params={"n": n}, auth=self.auth,
                            timeout=5).json()

    def kill(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


@pytest.fixture(scope="module")
def env(tmp_path_factory, minilm3):
    root = tmp_path_factory.mktemp("plug")
    rs = RedisServer(root).start()
    dep = pipeline_env.up(root / "state", minilm3, stack(root))
    plugin = Plugin(dep, rs.url, root).start()
    yield dep, rs, plugin, root
    plugin.kill()
    pipeline_env.cli(["down", "--state-dir", str(dep.state)], dep.env)
    rs.stop()


def replicas(dep, fn: str) -> int:
    r = requests.get(f"{dep.gateway}/system/function/{fn}", auth=dep.auth, timeout=5)
    return int(r.json()["replicas"])


def load(dep, rate: float, seconds: float, stop: threading.Event | None = None) -> list:
    offsets = openloop.gamma_arrivals(rate, 1.0, int(rate * seconds), seed=3)
    return openloop.run(f"{dep.gateway}/function/{FN[0]}", b"{}", offsets, workers=64,
                        stop=stop)


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_load_step_scales_the_bottleneck_up_then_down(env):
    dep, _, plugin, _ = env
    wait(lambda: plugin.health()["cycles"] >= 1, 20, "a first cycle")
    assert [replicas(dep, f) for f in FN] == [1, 1, 1]
    t0 = time.monotonic()
    done = threading.Event()  # the step lasts until relay-b scaled up, 14 s at most
    th = threading.Thread(target=load, args=(dep, 16.0, 14.0, done))
    th.start()
    try:
        up_at = wait(lambda: replicas(dep, FN[1]) >= 2 and time.monotonic(), 30,
                     "relay-b scaled up")
    finally:
        done.set()
        th.join()
    lag = up_at - t0
    print(f"relay-b scaled up {lag:.1f}s after the load step (period {PERIOD}s)")
    # two control periods, plus the scrape interval and rate() warm-up of Prometheus (2 s)
    assert lag <= 2 * PERIOD + 2.5, f"scale-up took {lag:.1f}s"
    ups = [d for d in plugin.decisions() if d.get("function") == FN[1] and d["action"] == "up"]
    assert ups and ups[-1]["reason"] and ups[-1]["inputs"]["arrival_rate"] > 0
    # the record names the step that set the count, as the policy step reported it
    step = ups[-1]["step"]
    assert step and ups[-1]["policy"] == step["policy"] in ("corrector", "smoother"), ups[-1]
    assert step["reason"] and step["reason"] in ups[-1]["reason"]
    assert replicas(dep, FN[0]) <= 2  # the cheap stages are not where the replicas go
    wait(lambda: replicas(dep, FN[1]) == 1, 60, "relay-b back to 1 after the load")
    downs = [d for d in plugin.decisions() if d.get("function") == FN[1] and
             d["action"] == "down"]
    assert downs and downs[-1]["step"] and downs[-1]["policy"] == downs[-1]["step"]["policy"]


def test_alertmanager_webhook_triggers_a_cycle(env):
    _, _, plugin, _ = env
    payload = {"receiver": "scale-up", "status": "firing", "version": "4",
               "groupKey": "{}:{alertname=\"APIHighInvocationRate\"}",
               "alerts": [{"status": "firing", "labels": {
                   "alertname": "APIHighInvocationRate", "function_name": "relay-b.openfaas-fn",
                   "service": "gateway", "severity": "major"},
                   "annotations": {"description": "High invocation total on relay-b"},
                   "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]}
    r = requests.post(plugin.url + "/system/alert", json=payload, auth=plugin.auth, timeout=5)
    assert r.status_code == 202 and r.json()["accepted"] == ["relay-b"]
    wait(lambda: any(d.get("trigger") == "alert" for d in plugin.decisions(20)), 10,
         "a cycle triggered by the alert")
    for bad in (b"not json", b"{}", b'{"alerts": []}', b'{"alerts": [{"labels": {}}]}',
                b'{"alerts": [{"status": "pending", "labels": {"function_name": "x"}}]}'):
        r = requests.post(plugin.url + "/system/alert", data=bad, auth=plugin.auth, timeout=5)
        assert r.status_code == 400 and "error" in r.json(), bad
    assert plugin.health()["ok"]


def test_prometheus_down_holds_then_resumes(env):
    dep, _, plugin, _ = env
    svc = next(s for s in services.recorded(dep.state) if s.name.startswith("prometheus"))
    before = [replicas(dep, f) for f in FN]
    services.stop(dep.state, svc)
    wait(lambda: any(d.get("policy") == "hold" for d in plugin.decisions(5)), 15,
         "a hold decision")
    time.sleep(2 * PERIOD)
    assert [replicas(dep, f) for f in FN] == before  # nothing scaled on missing data
    held = plugin.decisions(3)
    assert all(d.get("policy") == "hold" and "metrics unavailable" in d["reason"] for d in held)
    r = pipeline_env.cli(["up", "-f", str(env[3] / "stack.yml"), "-g", dep.gateway,
                          "--prometheus-url", dep.prometheus, "--state-dir", str(dep.state)],
                         dep.env)
    assert r.returncode == 0, r.stderr
    wait(lambda: plugin.decisions(1)[0].get("policy") != "hold", 30, "cycles acting again")


def test_redis_down_30s_no_crash_and_state_written_back(env):
    _, rs, plugin, _ = env
    c0 = plugin.health()["cycles"]
    rs.stop()
    time.sleep(30)
    h = plugin.health()
    assert plugin.proc.poll() is None and h["redis"] is False
    assert h["cycles"] >= c0 + 30 / PERIOD - 3  # it kept cycling from memory
    rs.start()  # empty: no persistence configured
    wait(lambda: rs.client().exists("quart:state"), 15, "state written back")
    doc = json.loads(rs.client().get("quart:state"))
    assert doc["cycles"] >= h["cycles"] and "relay" in doc["quart"]["pipelines"]
    assert rs.client().xlen("quart:decisions") > 0


def test_kill9_restores_state_and_keeps_steady_load_steady(env):
    dep, rs, plugin, root = env
    done = threading.Event()  # the load runs until the checks are done, at most 60 s
    th = threading.Thread(target=load, args=(dep, 4.0, 60.0, done))
    th.start()
    try:
        def settled():  # three cycles in a row without a change on any stage
            ds = [d for d in plugin.decisions(30) if d.get("function")][:3 * len(FN)]
            return len(ds) == 3 * len(FN) and all(d["action"] == "steady" for d in ds)

        wait(settled, 40, "a steady state under steady load")
        steady = [replicas(dep, f) for f in FN]
        saved = json.loads(rs.client().get("quart:state"))
        plugin.kill(signal.SIGKILL)
        t_restart = time.time()
        plugin.start()  # same port, same Redis: a new process
        wait(lambda: plugin.health()["cycles"] >= saved["cycles"] + 2, 30, "two new cycles")
        assert "restored state" in plugin.log.read_text()
        first = [d for d in plugin.decisions(30) if d.get("function") and d["t"] >= t_restart]
        assert len(first) >= len(FN)
        assert all(d["action"] == "steady" for d in first), first
        assert [replicas(dep, f) for f in FN] == steady
    finally:
        done.set()
        th.join()


def test_a_second_instance_stands_by(env):
    dep, rs, plugin, root = env
    other = Plugin(dep, rs.url, root).start()
    try:
        c_other, c_leader = other.health()["cycles"], plugin.health()["cycles"]
        time.sleep(2 * PERIOD + 1)
        assert other.health()["leader"] is False
        assert other.health()["cycles"] == c_other  # restored from Redis, never advanced
        assert plugin.health()["leader"] is True and plugin.health()["cycles"] > c_leader
    finally:
        other.kill()
