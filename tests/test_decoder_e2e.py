"""stack.yml's opt pipeline deployed with `quart-faas up --pipeline opt` (tiny seeded model).

Real processes: the embedded gateway + provider, keys_manager, zygotes and
forked replicas; the client talks to ``/function/opt-stage-0`` on the gateway
only, as it would to an OpenFaaS gateway.
"""
from __future__ import annotations

import json
import time

import pytest
import requests
import torch

from functions.partitioner import partition
from functions.stage.opt import DecoderMonolith
from local_provider import services
from local_provider.deploy import wait_available
from tests import pipeline_env
from tests.test_pipeline_e2e import sample, scrape

FN = ["opt-stage-0", "opt-stage-1"]
PROMPT = "Serverless decoding"


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory):
    out = tmp_path_factory.mktemp("opt") / "opt-tiny-2"
    partition(out, 2, model="opt-tiny-seeded")
    return out


@pytest.fixture(scope="module")
def dep(tiny2, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    gw, pv, mp, kp = (services.free_port() for _ in range(4))
    env = {**pipeline_env.os.environ, "QUART_OPT_MODEL_DIR": str(tiny2),
           "QUART_OPT_MODEL": "opt-tiny-seeded", "QUART_STATE_DIR": str(state)}
    env.pop("QUART_GATEWAY_URL", None)
    gateway = f"http://127.0.0.1:{gw}"
    r = pipeline_env.cli(["up", "-f", str(pipeline_env.REPO / "stack.yml"), "--pipeline", "opt",
                          "-g", gateway, "--provider-port", str(pv), "--metrics-port", str(mp),
                          "--keys-metrics-port", str(kp), "--no-prometheus",
                          "--state-dir", str(state)], env)
    d = pipeline_env.Deployment(gateway, f"http://127.0.0.1:{mp}", "", state,
                                ("admin", (state / "basic-auth-password").read_text().strip()
                                 if (state / "basic-auth-password").exists() else ""), env)
    try:
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert "minilm" not in r.stdout  # only the pipeline asked for
        yield d
    finally:
        assert pipeline_env.cli(["down", "--state-dir", str(state)], env).returncode == 0
        time.sleep(0.5)
        for fn in FN:
            assert pipeline_env.replica_pids(fn, d.gateway) == [], f"{fn} replicas left behind"


@pytest.fixture(scope="module")
def mono(tiny2):
    torch.set_num_threads(1)
    return DecoderMonolith(tiny2)


def url(dep, fn=FN[0]):
    return f"{dep.gateway}/function/{fn}"


def test_tokens_stream_through_the_gateway_before_generation_ends(dep, mono):
    n = 100
    t0 = time.perf_counter()
    arrivals, lines = [], []
    with requests.post(url(dep), json={"prompt": PROMPT, "max_new_tokens": n}, stream=True,
                       timeout=120) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/x-ndjson"
        assert "stage0;dur=" in r.headers["Server-Timing"]
        assert "stage1;dur=" in r.headers["Server-Timing"]
        for raw in r.iter_lines():
            arrivals.append(time.perf_counter() - t0)
            lines.append(json.loads(raw))
    summary = lines[-1]
    assert summary["done"] and summary["tokens"] == mono.generate(PROMPT, n)
    assert [x["token"] for x in lines[:-1]] == summary["tokens"]
    # streamed, not buffered: the first token reached the client while most of the
    # generation was still to come (a buffering proxy delivers every line at the end)
    assert arrivals[0] < 0.5 * arrivals[-1], (arrivals[0], arrivals[-1])
    assert len(summary["tokens"]) == n or summary["finish_reason"] == "eos"


def test_bad_input_is_a_4xx_and_the_pipeline_keeps_serving(dep, mono):
    for body, needle in [(b"{nope", "malformed JSON"), (b'{"prompt": 1}', "JSON object"),
                         (b'{"prompt": "x", "max_new_tokens": 100000}', "max_new_tokens")]:
        r = requests.post(url(dep), data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
    r = requests.post(url(dep, FN[1]), data=b"garbage", timeout=30,
                      headers={"Content-Type": "application/vnd.quart.decoder-step+safetensors"})
    assert r.status_code == 400 and r.json()["stage"] == 1
    r = requests.post(url(dep), json={"prompt": PROMPT, "max_new_tokens": 8, "stream": False},
                      timeout=60)
    assert r.status_code == 200 and r.json()["tokens"] == mono.generate(PROMPT, 8)


def test_each_token_is_one_invocation_of_the_later_stage(dep, mono):
    label = {"function_name": f"{FN[1]}.openfaas-fn", "code": "200"}
    before = sample(scrape(dep), "gateway_function_invocation_total", **label)
    r = requests.post(url(dep), json={"prompt": "count", "max_new_tokens": 12, "stream": False},
                      timeout=60)
    n = len(r.json()["tokens"])
    after = sample(scrape(dep), "gateway_function_invocation_total", **label)
    assert after - before == n  # one step per token (the prefill included)


def test_the_gateway_times_a_streamed_call_until_its_body_ends(dep):
    label = {"function_name": f"{FN[0]}.openfaas-fn", "code": "200"}
    text = scrape(dep)
    n0 = sample(text, "gateway_functions_seconds_count", **label)
    s0 = sample(text, "gateway_functions_seconds_sum", **label)
    with requests.post(url(dep), json={"prompt": "time me", "max_new_tokens": 60}, stream=True,
                       timeout=60) as r:
        lines = [json.loads(x) for x in r.iter_lines()]
    text = scrape(dep)
    assert sample(text, "gateway_functions_seconds_count", **label) == n0 + 1
    took = sample(text, "gateway_functions_seconds_sum", **label) - s0
    assert took >= lines[-1]["total_ms"] / 1e3  # the whole generation, not time to headers


def test_forked_replicas_of_a_later_stage_keep_tokens_exact(dep, mono):
    """Scale-up forks from the stage's zygote (weights in keys_manager's T1 segment); steps
    then land on replicas without the session's KV cache and are rebuilt, not wrong."""
    requests.post(f"{dep.gateway}/system/scale-function/{FN[1]}", auth=dep.auth, timeout=10,
                  json={"serviceName": FN[1], "replicas": 2}).raise_for_status()
    wait_available(dep.gateway, dep.auth, {FN[1]: 2}, 120)
    stats = requests.get(f"{dep.gateway}/system/quart/stats", auth=dep.auth, timeout=5).json()
    tiers = sorted(i["tier"] for i in stats[FN[1]]["instances"])
    assert "T0" in tiers, tiers  # forked from the warm zygote
    want = mono.generate(PROMPT, 20)

    def one(_: int) -> list[int]:
        r = requests.post(url(dep), json={"prompt": PROMPT, "max_new_tokens": 20,
                                          "stream": False}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["tokens"]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        assert all(t == want for t in pool.map(one, range(4)))
    stats = requests.get(f"{dep.gateway}/system/quart/stats", auth=dep.auth, timeout=5).json()
    assert all(i["served"] > 0 for i in stats[FN[1]]["instances"])


def test_a_client_that_leaves_mid_stream_frees_the_entry_replica(dep):
    r = requests.post(url(dep), json={"prompt": PROMPT, "max_new_tokens": 100}, stream=True,
                      timeout=60)
    assert r.status_code == 200 and json.loads(next(r.iter_lines()))["index"] == 0
    r.close()  # gone after the first token
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        s = requests.get(f"{dep.gateway}/system/quart/stats", auth=dep.auth, timeout=5).json()
        if s[FN[0]]["inflight"] == 0:
            break
        time.sleep(0.2)
    assert s[FN[0]]["inflight"] == 0
    # and the entry replica stopped generating (it notices at its next write)
    steps = s[FN[1]]["invocationCount"]
    time.sleep(1.0)
    s = requests.get(f"{dep.gateway}/system/quart/stats", auth=dep.auth, timeout=5).json()
    assert s[FN[1]]["invocationCount"] - steps <= 2
