"""``QUART_ACTUATOR=kubernetes``: the official client against stand-ins of the API server
(tests/fake_kube_api.py), the pods' control endpoints (by their contract, on their own pod
IPs 127.0.0.2, .3, ...) and faas-netes (tests/fake_faas_netes.py).  Every request body the
plugin sends to Kubernetes is validated against the Kubernetes schemas."""
from __future__ import annotations

import contextlib
import logging
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import kubernetes_validate
import pytest
from kubernetes import client

from gateway_plugin.actuate import Gateway
from gateway_plugin.actuators import PodActuator, make_actuator
from gateway_plugin.config import PluginConfig
from gateway_plugin.kube_pods import STRATEGIC, KubernetesPods, request_for, resize_patch
from local_provider import services
from tests.conftest import require_tool
from tests.fake_faas_netes import FakeFaasNetes
from tests.fake_kube_api import FakeKubeAPI, FakePodControl, function_pod

FN = "minilm-stage-1"
TOKEN = "ctl-token"
VERSIONS = [kubernetes_validate.latest_version(), "1.33.0"]
QUANTITY = re.compile(r"^[0-9]+m$")  # what we send: whole millicores


def stage(replicas: int) -> dict:
    return {"image": "ttl.sh/quart-faas/minilm-stage:0.1.0", "replicas": replicas,
            "envVars": {"QUART_STAGE": "1"},
            "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "5"},
            "annotations": {"com.openfaas.quart.pipeline": "minilm",
                            "com.openfaas.quart.stage": "1", "com.openfaas.quart.stages": "3"},
            "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}


@dataclass
class Cluster:
    api: FakeKubeAPI
    gw: FakeFaasNetes
    pods: dict[str, FakePodControl]  # pod name -> its control endpoint
    port: int


@contextlib.contextmanager
def cluster(n: int = 2, pod_token: str | None = TOKEN, **api_kw) -> Iterator[Cluster]:
    port = services.free_port()
    names = [f"{FN}-7d9f-{i}" for i in range(n)]
    specs = [function_pod(FN, name, f"127.0.0.{i + 2}") for i, name in enumerate(names)]
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(FakeKubeAPI(specs, **api_kw))
        gw = stack.enter_context(FakeFaasNetes({FN: stage(n)}))
        pods = {name: stack.enter_context(FakePodControl(f"127.0.0.{i + 2}", port, pod_token))
                for i, name in enumerate(names)}
        yield Cluster(api, gw, pods, port)


def actuator(c: Cluster, tmp_path, **cfg_kw) -> PodActuator:
    (tmp_path / "quart-control-token").write_text(TOKEN + "\n")
    cfg = PluginConfig(actuator="kubernetes", pod_control_port=c.port,
                       control_token_file=str(tmp_path / "quart-control-token"), **cfg_kw)
    conf = client.Configuration(host=c.api.url)
    conf.api_key["BearerToken"] = "Bearer sa-token"
    source = KubernetesPods(client.CoreV1Api(client.ApiClient(conf)), "openfaas-fn",
                            c.port)
    act = make_actuator(cfg, Gateway(c.gw.url, ("admin", "pw")), source)
    assert isinstance(act, PodActuator)
    return act


def step(act: PodActuator, workers: int, cpu: float | None = 1.0):
    """One control cycle's part: the view (pods listed, workers asked), then the target."""
    (f,) = act.view(act.gw.functions())
    return f, act.apply(f, workers, cpu)


def patches(c: Cluster) -> list:
    return c.api.calls("PATCH")


def test_view_counts_workers_and_bounds_them_by_pods(tmp_path):
    with cluster(2) as c:
        c.pods[f"{FN}-7d9f-0"].workers = 3
        act = actuator(c, tmp_path)
        (f,) = act.view(act.gw.functions())
        # 3 + 1 workers; bounds: scale.min 1 pod x 1, CE cap 5 pods x QUART_POD_MAX_WORKERS 4
        assert (f.replicas, f.available, f.min_replicas, f.max_replicas) == (4, 4, 1, 20)
        (listing,) = c.api.calls("GET")
        assert listing.query == {"labelSelector": f"faas_function in ({FN})"}
        for pod in c.pods.values():
            (get,) = pod.calls("GET")
            assert get.headers["Authorization"] == f"Bearer {TOKEN}"


def test_no_room_resizes_in_place_then_forks(tmp_path):
    """2 pods at 1 CPU with 1 worker, target 4 at 1 CPU per worker: each pod is resized to
    2 CPUs (request kept at half: Burstable stays Burstable), then gets a 2nd worker; no new
    pod, no PUT /system/functions."""
    with cluster(2) as c:
        act = actuator(c, tmp_path)
        f, out = step(act, 4)
        assert out.error == "" and out.speeds == ("workers", "cpu") and out.action == "up"
        assert sorted(p.path.rsplit("/", 2)[1] for p in patches(c)) == sorted(c.pods)
        for p in patches(c):
            assert p.headers["Content-Type"] == STRATEGIC
            assert p.json() == resize_patch(FN, 2000, 1000)
        for pod in c.pods.values():
            assert [r.json() for r in pod.calls("PUT")] == [{"workers": 2}]
            assert pod.workers == 2
        assert c.gw.calls("POST") == [] and c.gw.calls("PUT") == []
        for name, pod in c.api.pods.items():
            res = pod["status"]["containerStatuses"][0]["resources"]
            assert res["limits"]["cpu"] == "2000m" and res["requests"]["cpu"] == "1000m", name
        (f,) = act.view(act.gw.functions())
        assert f.replicas == 4 and f.cpu == 1.0


def test_every_resize_body_is_a_valid_pod_patch(tmp_path):
    """The bodies as sent, as a Pod (strict: no unknown field), and the pods they produced."""
    with cluster(2) as c:
        act = actuator(c, tmp_path)
        step(act, 4)
        step(act, 6, 1.5)
        assert len(patches(c)) >= 4
        for p in patches(c):
            body = p.json()
            name = p.path.rsplit("/", 2)[1]
            for v in VERSIONS:
                kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod",
                                              "metadata": {"name": name}, **body}, v,
                                             strict=True)
            for c_ in body["spec"]["containers"]:
                assert set(c_) == {"name", "resources"}
                for kind in c_["resources"].values():
                    assert set(kind) == {"cpu"} and QUANTITY.match(kind["cpu"])
        for pod in c.api.pods.values():
            for v in VERSIONS:
                kubernetes_validate.validate(pod, v, strict=True)


def test_validation_catches_a_bad_patch():
    bad = resize_patch(FN, 2000, 1000)
    bad["spec"]["containers"][0]["resource"] = bad["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "x"}, **bad}, VERSIONS[0],
                                     strict=True)


def test_pods_full_then_more_pods_within_the_ce_cap(tmp_path):
    """12 workers: 2 pods x 4 (QUART_POD_MAX_WORKERS) at 4 CPUs each, 4 short -> 4 more pods
    of 1 worker, but CE keeps 5: scale to 5."""
    with cluster(2) as c:
        act = actuator(c, tmp_path)
        _, out = step(act, 12)
        assert out.speeds == ("workers", "cpu", "pods")
        assert [p.workers for p in c.pods.values()] == [4, 4]
        assert [r.json() for r in c.gw.calls("POST", "/system/scale-function/")] == [
            {"serviceName": FN, "replicas": 5}]
        assert c.gw.functions[FN]["replicas"] == 5
        assert {p.json()["spec"]["containers"][0]["resources"]["limits"]["cpu"]
                for p in patches(c)} == {"4000m"}


def test_scale_down_retires_workers_before_giving_cpu_back(tmp_path):
    with cluster(2) as c:
        act = actuator(c, tmp_path)
        step(act, 6)  # 3 workers each, 3 CPUs each
        before = len(c.api.requests) + sum(len(p.requests) for p in c.pods.values())
        _, out = step(act, 2)
        assert out.action == "down" and out.speeds == ("workers", "cpu")
        assert [p.workers for p in c.pods.values()] == [1, 1]
        # per pod: the PUT that retires workers comes before the PATCH that takes CPU back
        for name, pod in c.pods.items():
            (put,) = pod.calls("PUT")[1:]
            patch = [p for p in patches(c) if f"/pods/{name}/" in p.path][-1]
            assert put.json() == {"workers": 1}
            assert patch.json() == resize_patch(FN, 1000, 500)
        assert before > 0 and c.gw.calls("POST") == []


def test_resize_infeasible_means_more_pods(tmp_path):
    """The node has 1.5 CPUs for requests: of the two resizes to 2 CPUs (request 1) one
    fits, the other stays PodResizePending/Infeasible; that pod gets no worker (a worker
    would share CPU it does not have) and is not patched again while pending; the workers
    still missing come as new pods."""
    with cluster(2, node_cpu_millis=1500) as c:
        act = actuator(c, tmp_path)
        _, out = step(act, 4)
        pending = {n for n, p in c.api.pods.items()
                   if any(x["type"] == "PodResizePending" for x in p["status"]["conditions"])}
        assert len(pending) == 1 and "pending" in out.error
        assert [c.pods[n].workers for n in sorted(c.pods)] == [1 if n in pending else 2
                                                               for n in sorted(c.pods)]
        n_patches = len(patches(c))
        for _ in range(3):
            _, out = step(act, 5)
        assert not [p for p in patches(c)[n_patches:] if p.path.split("/")[-2] in pending]
        assert c.gw.functions[FN]["replicas"] >= 3 and "pods" in out.speeds or \
            c.gw.calls("POST", "/system/scale-function/")


def test_a_cluster_without_pods_resize(tmp_path, caplog):
    """Kubernetes < 1.33: the subresource is a 404; said once, then no more PATCHes; the
    workers that needed the CPU are not forked, more pods come instead next cycle."""
    caplog.set_level(logging.WARNING)
    with cluster(1, resize=False) as c:
        act = actuator(c, tmp_path)
        _, out = step(act, 2)
        assert "resize" in out.error and c.pods[f"{FN}-7d9f-0"].workers == 1
        _, out = step(act, 2)
        assert len(patches(c)) == 1
        said = [r for r in caplog.records if r.name == "gateway_plugin.kube_pods"]
        assert len(said) == 1
        assert c.gw.functions[FN]["replicas"] == 2  # the second cycle added a pod


def test_wrong_or_missing_control_token_leaves_workers_alone(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with cluster(1, pod_token="another") as c:
        act = actuator(c, tmp_path)
        for _ in range(2):
            f, out = step(act, 3)
        assert f.max_replicas == 5  # 1 worker per pod: pods are the only way up
        assert c.pods[f"{FN}-7d9f-0"].calls("PUT") == []
        assert c.gw.functions[FN]["replicas"] == 3
        said = [r for r in caplog.records if "401" in r.getMessage()]
        assert len(said) == 1


@pytest.mark.parametrize("limit, request_, new, want", [
    (1000, 500, 3000, 1500),  # Burstable: the same share
    (1000, 1000, 3000, 3000),  # Guaranteed: equal
    (1000, 999, 1000, 999),  # Burstable stays below its limit
    (1000, None, 2000, None),  # no request: leave it
])
def test_request_keeps_the_qos_class(limit, request_, new, want):
    assert request_for(new, limit, request_) == want


def test_in_cluster_config_uses_the_service_account(tmp_path):
    """As in a pod: KUBERNETES_SERVICE_HOST/PORT, the token and CA the kubelet mounts
    (here files the test writes, and a certificate openssl makes for 127.0.0.1)."""
    key, cert = tmp_path / "key.pem", tmp_path / "ca.crt"
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj",
                    "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "token").write_text("the-sa-token")
    pod = function_pod(FN, f"{FN}-1", "127.0.0.2")
    with FakeKubeAPI([pod], token="the-sa-token", ssl_context=(str(cert), str(key))) as api:
        src = KubernetesPods.from_environment(
            "openfaas-fn", 8080, token_file=str(tmp_path / "token"), cert_file=str(cert),
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                     "KUBERNETES_SERVICE_PORT": str(api.port)})
        (info,) = src.pods([FN])[FN]
        assert (info.name, info.control_url, info.cpu_millis, info.ready) == (
            f"{FN}-1", "http://127.0.0.2:8080", 1000, True)
        (listing,) = api.calls("GET")
        assert listing.path == "/api/v1/namespaces/openfaas-fn/pods"
