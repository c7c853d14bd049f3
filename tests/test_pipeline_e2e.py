"""The MiniLM pipeline of stack.yml, deployed with `quart-faas up`, on real processes."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest
import requests
import torch

from functions.stage.bert import Monolith
from functions.stage.codec import CONTENT_TYPE, encode
from local_provider.deploy import wait_available
from quart_faas.metrics_query import GatewayMetrics
from tests import pipeline_env
from tests.conftest import SENTENCES

FN = ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]


@pytest.fixture(scope="module")
def dep(minilm3, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    d = pipeline_env.up(state, minilm3)
    yield d
    r = pipeline_env.cli(["down", "--state-dir", str(state)], d.env)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    for fn in FN:
        assert pipeline_env.replica_pids(fn, d.gateway) == [], \
            f"{fn} replicas left behind after down"


def invoke(dep, inputs, fn=FN[0], **kw):
    return requests.post(f"{dep.gateway}/function/{fn}", json={"inputs": inputs}, timeout=60, **kw)


def scrape(dep) -> str:
    return requests.get(f"{dep.metrics}/metrics", timeout=5).text


def sample(text: str, name: str, **labels) -> float:
    """Sum of samples of metric `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m:
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
    return total


def test_pipeline_equals_sentence_transformers_and_the_monolith(dep, minilm3, st_reference):
    r = invoke(dep, SENTENCES)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "all-MiniLM-L6-v2" and body["stages"] == 3
    emb = torch.tensor(body["embeddings"])
    assert emb.shape == (len(SENTENCES), 384)
    assert (emb - st_reference).abs().max().item() <= 1e-5
    assert (emb - Monolith(minilm3).encode(SENTENCES)).abs().max().item() <= 1e-5
    timing = r.headers["Server-Timing"]
    assert [p.split(";")[0].strip() for p in timing.split(",")] == ["stage0", "stage1", "stage2"]


def test_bad_inputs_get_4xx_and_the_pipeline_keeps_serving(dep, minilm3):
    url = f"{dep.gateway}/function/{FN[0]}"
    hdr = {"Content-Type": "application/json"}
    cases = [
        (requests.post(url, data=b"{nope", headers=hdr, timeout=10), 400, "malformed JSON"),
        (requests.post(url, json={"inputs": "text"}, timeout=10), 400, "must be a list"),
        (requests.post(url, json={"inputs": [1, 2]}, timeout=10), 400, "must be a string"),
        (requests.post(url, json={"inputs": []}, timeout=10), 400, "empty"),
        (requests.post(url, json={"inputs": ["x"] * 65}, timeout=10), 400, "limit of 64"),
        (requests.post(url, json={"inputs": ["y" * 10001]}, timeout=10), 400, "limit of 10000"),
        (requests.post(url, data=b"x" * (64 * 2**20 + 1), headers=hdr, timeout=30), 413, ""),
        (requests.post(f"{dep.gateway}/function/{FN[1]}", data=b"not tensors",
                       headers={"Content-Type": CONTENT_TYPE}, timeout=10), 400, "malformed"),
        (requests.post(f"{dep.gateway}/function/{FN[1]}", timeout=10,
                       data=encode(torch.zeros(1, 4, 100), torch.ones(1, 4, dtype=torch.int64),
                                   {"model": "all-MiniLM-L6-v2", "stage": "0"}),
                       headers={"Content-Type": CONTENT_TYPE}), 400, "[batch, seq, 384]"),
        (requests.post(f"{dep.gateway}/function/{FN[2]}", timeout=10,
                       data=encode(torch.zeros(1, 4, 384), torch.ones(1, 4, dtype=torch.int32),
                                   {"model": "all-MiniLM-L6-v2", "stage": "1"}),
                       headers={"Content-Type": CONTENT_TYPE}), 400, "int64"),
        (requests.post(f"{dep.gateway}/function/no-such-function", json={"inputs": ["a"]},
                       timeout=10), 404, "no-such-function"),
    ]
    for r, status, needle in cases:
        assert r.status_code == status, (status, r.text[:300])
        assert r.headers["Content-Type"].startswith("application/json")
        assert needle in r.json()["error"]
    ok = invoke(dep, ["still serving"])
    assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 1


def test_later_stage_error_reaches_the_client_with_its_status(dep, minilm3, tmp_path):
    """A stage whose next function is the wrong model: stage 1 answers 400, the client sees it."""
    from functions.partitioner import partition

    other = tmp_path / "mini"
    partition(other, 2, synthetic="bert-mini")
    body = {"service": "mismatch-stage-0", "image": "x",
            "envVars": {"QUART_MODEL_DIR": str(other), "QUART_STAGE": "0",
                        "QUART_NEXT_FUNCTION": FN[1], "QUART_GATEWAY_URL": dep.gateway},
            "annotations": {
                "com.openfaas.quart.handler": str(pipeline_env.REPO / "functions/stage"),
                "com.openfaas.quart.workdir": str(pipeline_env.REPO)}}
    r = requests.post(f"{dep.gateway}/system/functions", json=body, auth=dep.auth, timeout=10)
    assert r.status_code in (200, 202), r.text
    try:
        wait_available(dep.gateway, dep.auth, {"mismatch-stage-0": 1}, 120)
        r = invoke(dep, ["hello"], fn="mismatch-stage-0")
        assert r.status_code == 400, r.text
        assert r.json()["stage"] == 1 and "[batch, seq, 384]" in r.json()["error"]
        assert "Traceback" not in r.text
    finally:
        requests.delete(f"{dep.gateway}/system/functions",
                        json={"functionName": "mismatch-stage-0"}, auth=dep.auth, timeout=10)
    assert invoke(dep, ["fine"]).status_code == 200


def test_gateway_metrics_have_upstream_names_and_exact_counts(dep):
    before = scrape(dep)
    for _ in range(5):
        assert invoke(dep, ["count me"]).status_code == 200
    for _ in range(2):
        assert invoke(dep, []).status_code == 400
    after = scrape(dep)
    for line in ("# TYPE gateway_function_invocation_started counter",
                 "# TYPE gateway_function_invocation_total counter",
                 "# TYPE gateway_functions_seconds histogram",
                 "# TYPE gateway_service_count gauge"):
        assert line in after

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    f0, f1, f2 = (f"{n}.openfaas-fn" for n in FN)
    assert delta("gateway_function_invocation_started", function_name=f0) == 7
    assert delta("gateway_function_invocation_total", function_name=f0, code="200") == 5
    assert delta("gateway_function_invocation_total", function_name=f0, code="400") == 2
    for f in (f1, f2):
        assert delta("gateway_function_invocation_started", function_name=f) == 5
        assert delta("gateway_function_invocation_total", function_name=f, code="200") == 5
        assert delta("gateway_function_invocation_total", function_name=f, code="400") == 0
    assert delta("gateway_functions_seconds_count", function_name=f0, code="200") == 5
    assert delta("gateway_functions_seconds_bucket", function_name=f0, code="200", le="+Inf") == 5
    assert sample(after, "gateway_service_count", function_name=f1) >= 1
    assert "quart_function_inflight{" in after and "quart_function_queue_depth{" in after


def test_prometheus_returns_the_pipeline_rate(dep):
    # rate() sees only increases between two scrapes, so Prometheus must hold each counter
    # before the calls: its first scrape of a fresh deployment came 6 s late on a loaded
    # machine, and a series first scraped after every call is flat (rate 0)
    assert invoke(dep, ["rate"]).status_code == 200  # every stage's counter exists
    m = GatewayMetrics(dep.prometheus)
    deadline = time.monotonic() + 30
    while not set(FN) <= set(m.invocations()):
        assert time.monotonic() < deadline, "Prometheus never scraped the gateway's counters"
        time.sleep(0.5)
    for _ in range(10):
        assert invoke(dep, ["rate"]).status_code == 200
    deadline = time.monotonic() + 30
    rates: dict[str, float] = {}
    while time.monotonic() < deadline:
        rates = m.rate("1m")
        if all(rates.get(f, 0) > 0 for f in FN):
            break
        time.sleep(1)
    assert all(rates.get(f, 0) > 0 for f in FN), rates
    raw = m.prom.custom_query(
        "sum(rate(gateway_function_invocation_total[1m])) by (function_name)")
    assert {row["metric"]["function_name"] for row in raw} >= {f"{f}.openfaas-fn" for f in FN}


def test_basic_auth_protects_system_not_functions(dep):
    assert requests.get(f"{dep.gateway}/system/functions", timeout=5).status_code == 401
    assert requests.get(f"{dep.gateway}/system/functions", auth=("admin", "wrong"),
                        timeout=5).status_code == 401
    r = requests.get(f"{dep.gateway}/system/functions", auth=dep.auth, timeout=5)
    assert r.status_code == 200 and {f["name"] for f in r.json()} >= set(FN)
    assert invoke(dep, ["open"]).status_code == 200
    assert requests.get(f"{dep.gateway}/healthz", timeout=5).status_code == 200
    assert os.stat(dep.state / "basic-auth-password").st_mode & 0o777 == 0o600


def test_killed_replica_is_replaced_under_load(dep):
    pids = pipeline_env.serving_pids(dep, FN[1])
    assert len(pids) == 1
    stop = threading.Event()
    codes: list[int] = []

    def load():
        while not stop.is_set():
            try:
                codes.append(invoke(dep, ["under load"]).status_code)
            except requests.RequestException:
                codes.append(0)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = pipeline_env.serving_pids(dep, FN[1])
        st = requests.get(f"{dep.gateway}/system/function/{FN[1]}", auth=dep.auth, timeout=5).json()
        if new and new != pids and st["availableReplicas"] >= 1:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert pipeline_env.serving_pids(dep, FN[1]) not in ([], pids)
    assert codes.count(200) > 0
    later = [invoke(dep, ["after the kill"]).status_code for _ in range(5)]
    assert later == [200] * 5


def test_scale_through_the_gateway(dep):
    url = f"{dep.gateway}/system/scale-function/{FN[2]}"
    r = requests.post(url, json={"serviceName": FN[2], "replicas": 2}, auth=dep.auth, timeout=5)
    assert r.status_code in (200, 202)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = requests.get(f"{dep.gateway}/system/function/{FN[2]}", auth=dep.auth, timeout=5).json()
        if st["availableReplicas"] == 2:
            break
        time.sleep(0.2)
    assert st["replicas"] == 2 and st["availableReplicas"] == 2
    assert len(pipeline_env.serving_pids(dep, FN[2])) == 2
    results = {json.dumps(invoke(dep, ["same answer"]).json()["embeddings"]) for _ in range(6)}
    assert len(results) == 1  # both replicas compute the same thing
    requests.post(url, json={"serviceName": FN[2], "replicas": 1}, auth=dep.auth, timeout=5)
