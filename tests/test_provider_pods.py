"""QUART_LAUNCHER=pod end to end: the upstream OpenFaaS gateway -> our provider -> a pod.

The upstream gateway binds :8080 and :8082 wherever it runs, so it gets a network namespace
of its own (a pod network slot, local_provider/pods.py), and our provider listens on that
slot's host-side address: the gateway reaches it over the veth pair, and the provider
reaches each replica's pod at the pod's IP:8080. Nothing binds on the machine's ports.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from local_provider.config import ServeConfig
from local_provider.pod_launcher import PodLauncher
from local_provider.podnet import NETNS_DIR, PodNet
from local_provider.server import serve
from local_provider.types import ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR
from tests.conftest import REPO, openfaas_bin
from tests.pod_env import STAGE, TEMPLATE, make_runner, post_stage, stage_body, wait_until

PASSWORD = "pod-gateway-pw"
FN = "minilm-pod"


@dataclass
class Cluster:
    gateway: str  # the upstream gateway, in its namespace
    provider: str  # ours, on the host end of that namespace's veth
    launcher: PodLauncher

    def sys(self, method: str, path: str, doc: object = None) -> requests.Response:
        return requests.request(method, self.gateway + path, json=doc, timeout=30,
                                auth=("admin", PASSWORD))

    def available(self) -> int:
        r = requests.get(f"{self.provider}/system/function/{FN}", auth=("admin", PASSWORD),
                         timeout=10)
        return int(r.json()["availableReplicas"]) if r.status_code == 200 else -1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("pod-provider")
    launcher = PodLauncher(state, make_runner(state))
    gw_exe = openfaas_bin("gateway")
    net = PodNet.claim()
    stop, gateway = threading.Event(), None
    try:
        net.setup()
        (state / "pw").write_text(PASSWORD)
        env = {**os.environ, "QUART_BASIC_AUTH_PASSWORD_FILE": str(state / "pw")}
        cfg = ServeConfig.from_env(env, bind=net.host_ip, provider_port=0, state_dir=state)
        server = threading.Thread(target=serve, args=(cfg, "provider"), daemon=True,
                                  kwargs={"stop": stop, "launcher": launcher})
        server.start()
        serve_json = wait_until(lambda: (state / "serve.json").is_file() and json.loads(
            (state / "serve.json").read_text()), 30, "the provider listening")
        gateway = _start_gateway(gw_exe, net, serve_json["provider_url"], state)
        c = Cluster(f"http://{net.ip}:8080", serve_json["provider_url"], launcher)
        wait_until(lambda: _answers(c.gateway + "/healthz"), 10, "the gateway up")
        yield c
    finally:
        stop.set()
        if gateway is not None:
            gateway.kill()
            gateway.wait()
        server.join(30)
        launcher.close()
        net.teardown()


def _start_gateway(exe: Path, net: PodNet, provider_url: str, state: Path) -> subprocess.Popen:
    secrets = state / "gateway-secrets"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text("admin")
    (secrets / "basic-auth-password").write_text(PASSWORD)
    env = {"PATH": os.environ["PATH"], "functions_provider_url": provider_url + "/",
           "basic_auth": "true", "secret_mount_path": str(secrets),
           "faas_prometheus_host": "127.0.0.1", "faas_prometheus_port": "9090",
           "read_timeout": "60s", "write_timeout": "60s", "upstream_timeout": "55s",
           "scale_from_zero": "true"}
    with open(state / "gateway.log", "wb") as log:
        return subprocess.Popen(["nsenter", f"--net={NETNS_DIR / net.netns}", "--", str(exe)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_upstream_gateway_reaches_a_stage_in_a_pod(cluster, minilm3):
    dep = {"service": FN, "image": "ttl.sh/quart-faas/minilm-stage:0.1.0",
           "envVars": {"QUART_MODEL_DIR": str(minilm3), "QUART_STAGE": "2",
                       "QUART_TORCH_THREADS": "1", "QUART_POD_WORKERS": "2"},
           "labels": {"com.openfaas.scale.min": "1"}, "limits": {"cpu": "500m"},
           "annotations": {ANN_HANDLER: str(STAGE), ANN_TEMPLATE: str(TEMPLATE),
                           ANN_WORKDIR: str(REPO)}}
    assert cluster.sys("POST", "/system/functions", dep).status_code in (200, 202)
    wait_until(lambda: cluster.available() == 1, 120, "the pod ready")
    r = post_stage(f"{cluster.gateway}/function/{FN}", stage_body(minilm3, 2))
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["embeddings"]) == 2
    assert "X-Quart-Worker" in r.headers and "X-Duration-Seconds" in r.headers  # pod, watchdog
    pods = cluster.launcher.pods(FN)
    assert len(pods) == 1 and pods[0].url.startswith("http://10.233.")
    pod = pods[0]
    stats = requests.get(cluster.provider + "/system/quart/stats", auth=("admin", PASSWORD),
                         timeout=10).json()
    assert [i["url"] for i in stats[FN]["instances"]] == [pod.url]
    # the pod has the launcher's control token, so the endpoint is on
    auth = {"Authorization": f"Bearer {cluster.launcher.token}"}
    state = requests.put(pod.url + "/_/quart/workers", json={"workers": 3}, headers=auth,
                         timeout=30).json()
    assert state["workers"] == state["ready"] == 3
    # limits.cpu is the pod's quota, changed in place by a metadata-only update
    wait_until(lambda: pod.cpu_millis() == 500, 5, "limits.cpu applied to the pod")
    pids = set(pod.pids())
    dep["limits"] = {"cpu": "250m"}
    assert cluster.sys("PUT", "/system/functions", dep).status_code in (200, 202)
    wait_until(lambda: pod.cpu_millis() == 250, 5, "the new limit applied in place")
    assert set(pod.pids()) == pids and cluster.launcher.pods(FN) == [pod]
    assert cluster.sys("DELETE", "/system/functions", {"functionName": FN}).status_code in (
        200, 202)
    wait_until(lambda: not pod.alive() and not pod.pids(), 20, "the pod stopped")
    wait_until(lambda: not (NETNS_DIR / pod.net.netns).exists(), 5, "its netns removed")


def test_a_pipeline_of_pods_calls_the_next_stage_through_the_node_local_gateway(
        tmp_path):
    """Stage a's pod calls stage b through QUART_GATEWAY_URL, our gateway on this machine's
    127.0.0.1, which inside a pod is the pod's own loopback: the launcher's relay at the
    pod's host end carries it (as a pod reaches the gateway's Service on a cluster)."""
    launcher = PodLauncher(tmp_path, make_runner(tmp_path))
    (tmp_path / "pw").write_text(PASSWORD)
    env = {**os.environ, "QUART_BASIC_AUTH_PASSWORD_FILE": str(tmp_path / "pw")}
    cfg = ServeConfig.from_env(env, gateway_port=0, provider_port=0, metrics_port=0,
                               state_dir=tmp_path)
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(cfg, "all"), daemon=True,
                              kwargs={"stop": stop, "launcher": launcher})
    server.start()
    try:
        urls = wait_until(lambda: (tmp_path / "serve.json").is_file() and json.loads(
            (tmp_path / "serve.json").read_text()), 30, "the provider listening")
        gw = urls["gateway_url"]
        assert gw.startswith("http://127.0.0.1:")
        for name, nxt in (("relay-b", ""), ("relay-a", "relay-b")):
            dep = {"service": name, "image": f"ttl.sh/test/{name}:latest",
                   "envVars": {"QUART_PRELOAD": "", "QUART_POD_WORKERS": "1",
                               "QUART_SLEEP_MS": "1", "QUART_NEXT_FUNCTION": nxt},
                   "annotations": {ANN_HANDLER: str(REPO / "tests" / "fixtures" / "relay")}}
            r = requests.post(gw + "/system/functions", json=dep, auth=("admin", PASSWORD),
                              timeout=10)
            assert r.status_code in (200, 202), r.text
        r = wait_until(lambda: (r := requests.post(gw + "/function/relay-a", data=b"{}",
                                                   timeout=30)).status_code == 200 and r, 30,
                       "the pipeline answering")
        assert r.json()["ok"] is True and "own;dur=" in r.headers["Server-Timing"]
        ips = {p.ip for p in launcher.pods("relay-a") + launcher.pods("relay-b")}
        assert len(ips) == 2 and all(ip.startswith("10.233.") for ip in ips)  # two pods
    finally:
        stop.set()
        server.join(30)
        launcher.close()


def test_the_launcher_lists_its_pods_where_the_pods_actuator_reads_them(tmp_path):
    """QUART_LAUNCHER=pod publishes each pod as the plugin's ``pods`` actuator lists it
    (gateway_plugin/local_pods.py): in the state dir the plugin's defaults point at, ready
    once the readiness probe passes, its control endpoint reachable from this namespace
    with the launcher's token, its CPU resized in place through the cgroup it names, and
    out of the listing as soon as it drains."""
    from gateway_plugin.config import PluginConfig
    from gateway_plugin.local_pods import RegistryPods
    from gateway_plugin.pod_control import PodControl, read_token

    launcher = PodLauncher(tmp_path, make_runner(tmp_path))
    (tmp_path / "pw").write_text(PASSWORD)
    env = {**os.environ, "QUART_BASIC_AUTH_PASSWORD_FILE": str(tmp_path / "pw")}
    cfg = ServeConfig.from_env(env, gateway_port=0, provider_port=0, metrics_port=0,
                               state_dir=tmp_path)
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(cfg, "all"), daemon=True,
                              kwargs={"stop": stop, "launcher": launcher})
    server.start()
    plugin = PluginConfig.from_env({"QUART_ACTUATOR": "pods", "QUART_STATE_DIR": str(tmp_path)})
    source, fn = RegistryPods(plugin.pod_registry), "relay-p"
    token = read_token(plugin.control_token_file)
    try:
        urls = wait_until(lambda: (tmp_path / "serve.json").is_file() and json.loads(
            (tmp_path / "serve.json").read_text()), 30, "the provider listening")
        sysurl, auth = urls["gateway_url"] + "/system", ("admin", PASSWORD)
        assert token == launcher.token
        dep = {"service": fn, "image": "ttl.sh/test/relay:latest", "limits": {"cpu": "500m"},
               "envVars": {"QUART_PRELOAD": "", "QUART_POD_WORKERS": "2", "QUART_SLEEP_MS": "1"},
               "annotations": {ANN_HANDLER: str(REPO / "tests" / "fixtures" / "relay")}}
        assert requests.post(sysurl + "/functions", json=dep, auth=auth,
                             timeout=10).status_code in (200, 202)
        (info,) = wait_until(lambda: [p for p in source.pods([fn])[fn] if p.ready and
                                      p.cpu_millis == 500], 60, "a ready pod listed")
        (pod,) = launcher.pods(fn)
        assert (info.name, info.control_url, info.new_pod_workers) == (
            pod.name, pod.url.replace(":8080", ":8082"), 2)  # the zygote's control port
        ctl = PodControl(token)
        assert ctl.get(info.control_url).workers == 2
        assert ctl.put(info.control_url, 3).ready == 3
        pids = set(pod.pids())
        assert source.resize(fn, info, 750) and pod.cpu_millis() == 750  # in place
        assert pids <= set(pod.pids()) and pod.alive()
        r = requests.post(sysurl + "/scale-function/" + fn, json={"serviceName": fn,
                          "replicas": 2}, auth=auth, timeout=10)
        assert r.status_code in (200, 202)
        two = wait_until(lambda: len(got := source.pods([fn])[fn]) == 2 and
                         all(p.ready for p in got) and got, 60, "two ready pods listed")
        assert {p.control_url for p in two} == {p.control_url for p in launcher.pods(fn)}
        requests.post(sysurl + "/scale-function/" + fn, json={"serviceName": fn,
                      "replicas": 1}, auth=auth, timeout=10)
        wait_until(lambda: len(source.pods([fn])[fn]) == 1, 20, "the drained pod unlisted")
        requests.delete(sysurl + "/functions", json={"functionName": fn}, auth=auth, timeout=10)
        wait_until(lambda: source.pods([fn])[fn] == [], 20, "no pod listed after the delete")
        assert not list((tmp_path / "pod-registry").glob("*/*.tmp"))
    finally:
        stop.set()
        server.join(30)
        launcher.close()
