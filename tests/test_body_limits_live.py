"""Issue 18, findings 4 and 5, on a real deployment (`quart-faas up -f stack.yml`): bodies a
stranger sends cannot push the function endpoint or the provider API into a 500, nor take
the gateway's memory.

- deeply nested JSON and lone surrogates get a 400 JSON error at ``/function/minilm-stage-0``
  (was ``stage 0 failed: RecursionError`` / ``TypeError``, 500) and at
  ``POST /system/functions`` (was a 500);
- a body larger than the function accepts gets a 413 naming the limit, and three concurrent
  60 MB bodies leave the gateway's RSS where it was (they took it from 143 to 460 MB);
- the pipeline serves valid requests afterwards.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from contracts.body_limits import stage_body_limit
from tests import pipeline_env

FN = ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]
NESTED = b'{"a":' * 50000 + b"1" + b"}" * 50000
SURROGATE = b'{"inputs": ["\\ud800"]}'  # JSON text for a lone surrogate


@pytest.fixture(scope="module")
def dep(minilm3, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    d = pipeline_env.up(state, minilm3)
    yield d
    r = pipeline_env.cli(["down", "--state-dir", str(state)], d.env)
    assert r.returncode == 0, r.stderr


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def gateway_pid(dep) -> int:
    return int(json.loads((dep.state / "serve.json").read_text())["pid"])


def embed(dep, texts: list[str]) -> requests.Response:
    return requests.post(f"{dep.gateway}/function/{FN[0]}", json={"inputs": texts}, timeout=60)


def assert_json_error(r: requests.Response, status: int, needle: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    assert needle in r.json()["error"], r.json()


@pytest.mark.parametrize("body, needle", [(NESTED, "nested"), (SURROGATE, "lone surrogate")],
                         ids=["nested", "surrogate"])
def test_hostile_json_gets_400_at_the_function_and_the_provider_api(dep, body, needle):
    hdr = {"Content-Type": "application/json"}
    r = requests.post(f"{dep.gateway}/function/{FN[0]}", data=body, headers=hdr, timeout=30)
    assert_json_error(r, 400, needle)
    assert r.json().get("stage") == 0
    r = requests.post(f"{dep.gateway}/system/functions", data=body, headers=hdr,
                      auth=dep.auth, timeout=30)
    assert_json_error(r, 400, needle)
    assert embed(dep, ["still serving"]).status_code == 200


def test_a_body_over_the_stage_limit_gets_413_naming_it(dep):
    limit = stage_body_limit({"QUART_STAGE": "0"}, {"architecture": "bert"})
    body = json.dumps({"inputs": ["x" * 10000] * 64}).encode() + b" " * (limit + 1)
    r = requests.post(f"{dep.gateway}/function/{FN[0]}", data=body,
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert_json_error(r, 413, f"{limit} bytes function {FN[0]} accepts")
    assert r.json()["limit"] == limit
    r = requests.post(f"{dep.gateway}/function/{FN[1]}", data=b"\0" * (30 << 20), timeout=60,
                      headers={"Content-Type": "application/vnd.quart.activations+safetensors"})
    assert_json_error(r, 413, f"function {FN[1]} accepts")
    assert r.json()["limit"] < 30 << 20


def test_three_concurrent_60mb_bodies_get_413_and_leave_the_gateway_rss_flat(dep):
    pid = gateway_pid(dep)
    body = b'{"inputs": ["' + b"x" * (60 << 20) + b'"]}'
    hdr = {"Content-Type": "application/json"}
    for _ in range(3):  # warm: threads, pools and the refusal path exist before we measure
        assert embed(dep, ["warm"]).status_code == 200
    requests.post(f"{dep.gateway}/function/{FN[0]}", data=body[:8 << 20], headers=hdr, timeout=60)
    time.sleep(0.5)
    before = rss_kib(pid)
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda _: requests.post(
            f"{dep.gateway}/function/{FN[0]}", data=body, headers=hdr, timeout=120), range(3)))
    after = rss_kib(pid)
    print(f"gateway RSS before {before} KiB, after three 60 MB bodies {after} KiB")
    assert [r.status_code for r in codes] == [413] * 3, [r.text[:200] for r in codes]
    assert all("limit" in r.json() for r in codes)
    assert after - before < 8 << 10, f"gateway RSS {before} -> {after} KiB"
    ok = embed(dep, ["the system keeps serving", "valid requests"])
    assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 2
