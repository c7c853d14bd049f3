"""The keys_manager process on its own: real agent, real zygotes, real forked replicas, real
MiniLM weights in a real /dev/shm segment."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from functions.stage.bert import read_manifest
from keys_manager.client import AgentError, call
from keys_manager.procs import alive, start_time
from local_provider import services

REPO = Path(__file__).resolve().parents[1]
COW = REPO / "tests" / "fixtures" / "cow"
STAGE_HANDLER = REPO / "functions" / "stage"
TEMPLATE = REPO / "template" / "quart-python"


class Agent:
    def __init__(self, root: Path, threshold: str = "1G") -> None:
        self.root = root
        self.sock = root / "km.sock"
        self.shm = Path(f"/dev/shm/quart-test-{uuid.uuid4().hex[:8]}")
        self.port = services.free_port()
        self.env = {**os.environ, "QUART_KEYS_SOCKET": str(self.sock),
                    "QUART_KEYS_DIR": str(root / "keys"), "QUART_SHM_DIR": str(self.shm),
                    "QUART_MEMORY_THRESHOLD": threshold, "QUART_KEYS_METRICS_PORT": str(self.port),
                    "QUART_KEYS_REAP_S": "0.1", "QUART_KEYS_SCRUB_S": "0"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.root / "agent.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "keys_manager"], env=self.env,
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                call(self.sock, {"op": "ping"}, 2)
                return
            except AgentError:
                assert self.proc.poll() is None, (self.root / "agent.log").read_text()
                time.sleep(0.05)
        raise AssertionError("agent did not start")

    def __call__(self, doc: dict, timeout: float = 120) -> dict:
        return call(self.sock, doc, timeout)

    def spawn(self, model_dir: Path, stage: int, name: str = "cow", index: int = 0,
              handler: Path = COW, env: dict[str, str] | None = None, **extra) -> dict:
        rep = {"function": f"{name}-{stage}", "index": index, "handler_dir": str(handler),
               "template_dir": str(TEMPLATE), "workdir": str(REPO),
               "env": {**os.environ, "QUART_MODEL_DIR": str(model_dir), "QUART_STAGE": str(stage),
                       **(env or {})},
               "log_path": str(self.root / "logs" / f"{name}-{stage}-{index}.log"),
               "max_inflight": 4}
        return self({"op": "spawn", "replica": rep, **extra}, 300)["replica"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def embed(rep: dict, op: str = "embed", tries: int = 200) -> dict:
    for _ in range(tries):
        try:
            r = requests.post(rep["url"], json={"op": op}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"replica {rep['pid']} never answered")


def kill_all(status: dict) -> None:
    for p in status["replicas"] + status["zygotes"]:
        if alive(p["pid"], p["started"]):
            os.kill(p["pid"], signal.SIGKILL)


def _agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("ka"))
    a.start()
    yield a
    st = a({"op": "status"})["status"] if a.proc.poll() is None else None
    a.stop()
    if st:
        kill_all(st)
    assert not a.shm.exists(), "T1 left behind in /dev/shm"


agent = pytest.fixture(_agent)
# one agent for every bad request in turn: each must leave it serving the next
shared_agent = pytest.fixture(_agent, scope="module")


def test_forked_replicas_share_the_zygote_and_answer_alike(agent, minilm3):
    first = agent.spawn(minilm3, 1)
    assert first["tier"] == "T3"  # cold: T3 -> T2 -> T1, then the zygote started
    second = agent.spawn(minilm3, 1, index=1)
    assert second["tier"] == "T0" and second["zygote_pid"] == first["zygote_pid"]
    a, b = embed(first), embed(second)
    assert a["digest"] == b["digest"] and a["mapped"] and b["pid"] != a["pid"]
    st = agent({"op": "status"})["status"]
    assert st["cache"]["pinned"] == {"all-MiniLM-L6-v2--stage-1": 2}
    assert [z["pid"] for z in st["zygotes"]] == [first["zygote_pid"]]
    seg = agent.shm / "all-MiniLM-L6-v2--stage-1.safetensors"
    assert seg.is_file() and (seg.stat().st_mode & 0o777) == 0o600


def test_copy_on_write_a_replica_scribbling_on_its_weights_changes_nobody_else(agent, minilm3):
    a = agent.spawn(minilm3, 2)
    b = agent.spawn(minilm3, 2, index=1)
    before = embed(b)
    sha = read_manifest(minilm3)["stages"][2]["sha256"]
    scribbled = embed(a, "scribble")
    assert scribbled["digest"] != before["digest"]  # its own weights are zeros now
    assert embed(b) == before  # the sibling computes what it did
    c = agent.spawn(minilm3, 2, index=2)  # a new fork from the zygote, after the scribble
    assert embed(c)["digest"] == before["digest"]
    assert agent({"op": "scrub"})["rebuilt"] == []  # the T1 file still has the manifest's sha256
    from functions.stage.bert import sha256_file
    assert sha256_file(agent.shm / "all-MiniLM-L6-v2--stage-2.safetensors") == sha


def test_eviction_respects_the_threshold_and_never_evicts_a_running_stage(tmp_path_factory,
                                                                          minilm3):
    sizes = [s["file_bytes"] for s in read_manifest(minilm3)["stages"]]
    a = Agent(tmp_path_factory.mktemp("ke"), threshold=str(sizes[0] + sizes[1] + 1024))
    a.start()
    try:
        r0, r1 = a.spawn(minilm3, 0), a.spawn(minilm3, 1)
        with pytest.raises(AgentError) as e:  # both stages run replicas: nothing may go
            a({"op": "ensure", "model_dir": str(minilm3), "stage": 2})
        assert e.value.kind == "cache_full" and "pinned" in str(e.value)
        assert a({"op": "kill", "pid": r1["pid"]})["killed"] is True
        ens = a({"op": "ensure", "model_dir": str(minilm3), "stage": 2})
        assert ens["tier"] == "T2"  # the refused attempt had reached T2; only T1 was full
        st = a({"op": "status"})["status"]
        cached = {k: v["T1"] for k, v in st["cache"]["entries"].items()}
        assert cached == {"all-MiniLM-L6-v2--stage-0": True, "all-MiniLM-L6-v2--stage-1": False,
                          "all-MiniLM-L6-v2--stage-2": True}
        assert st["cache"]["bytes"]["T1"] <= sizes[0] + sizes[1] + 1024
        assert [z["function"] for z in st["zygotes"]] == ["cow-0"]  # stage 1's zygote went too
        assert embed(r0)["mapped"]  # the pinned stage kept serving
    finally:
        st = a({"op": "status"})["status"]
        a.stop()
        kill_all(st)
    assert not a.shm.exists()


@pytest.mark.parametrize("doc, needle", [
    ({"op": "nope"}, "unknown op"),
    ([1, 2], "JSON object"),
    ({"op": "spawn", "replica": {"function": "../etc"}}, "invalid function name"),
    ({"op": "spawn", "replica": {"function": "ok", "handler_dir": "rel", "template_dir": "/",
                                 "workdir": "/", "log_path": "/x"}}, "absolute path"),
    ({"op": "spawn", "replica": {"function": "ok", "env": {"A": 1}}}, "env must map"),
    ({"op": "ensure", "model_dir": "/nonexistent", "stage": 0}, "not found"),
    ({"op": "evict", "stage": "../../etc/passwd--stage-0"}, "invalid"),
    ({"op": "kill", "pid": "1"}, "pid must be an integer"),
])
def test_bad_requests_get_clear_errors_and_the_agent_keeps_serving(shared_agent, doc, needle):
    with pytest.raises(AgentError) as e:
        shared_agent(doc)
    assert e.value.kind == "bad_request" and needle in str(e.value)
    assert shared_agent({"op": "ping"})["pid"] == shared_agent.proc.pid


def test_invalid_json_and_oversized_lines(shared_agent):
    agent = shared_agent
    import socket as so

    for payload in (b"{not json\n", b"x" * ((1 << 20) + 10) + b"\n"):
        with so.socket(so.AF_UNIX, so.SOCK_STREAM) as s:
            s.connect(str(agent.sock))
            try:
                s.sendall(payload)
            except BrokenPipeError:
                pass  # the agent stopped reading at the limit and answered
            ans = json.loads(s.makefile().readline())
        assert ans["ok"] is False and ans["kind"] == "bad_request"
    assert agent({"op": "ping"})["ok"]
    assert (agent.sock.stat().st_mode & 0o777) == 0o600


def test_kill9_of_agent_and_zygote_serving_goes_on_and_nothing_leaks(agent, minilm3):
    r = agent.spawn(minilm3, 1)
    ref = embed(r)
    zpid = r["zygote_pid"]
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait()
    assert embed(r) == ref  # the replica is not the agent's thread
    agent.start()  # a new agent: adopts the zygote and the replica, re-pins the stage
    st = agent({"op": "status"})["status"]
    assert [z["pid"] for z in st["zygotes"]] == [zpid]
    assert [x["pid"] for x in st["replicas"]] == [r["pid"]]
    assert st["cache"]["pinned"] == {"all-MiniLM-L6-v2--stage-1": 1}
    assert agent.spawn(minilm3, 1, index=1)["tier"] == "T0"  # the adopted zygote forks
    os.kill(zpid, signal.SIGKILL)
    time.sleep(0.3)
    assert embed(r) == ref  # nor its zygote's
    again = agent.spawn(minilm3, 1, index=2)
    # a new zygote, mapping the shared memory: warmed again by the agent as soon as it saw
    # the death (T0 here), or started by this spawn if it came first (T1)
    assert again["tier"] in ("T0", "T1") and again["zygote_pid"] != zpid
    assert embed(again)["digest"] == ref["digest"]


def test_kill9_leftovers_are_cleaned_on_restart(tmp_path_factory, minilm3):
    a = Agent(tmp_path_factory.mktemp("kl"))
    a.start()
    r = a.spawn(minilm3, 2)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    os.kill(r["pid"], signal.SIGKILL)  # its replica died while no agent watched
    stray = a.shm / ".tmp-half-written"
    stray.write_bytes(b"partial")  # e.g. a publish cut short by the crash
    a.start()
    st = a({"op": "status"})["status"]
    assert st["replicas"] == [] and st["cache"]["pinned"] == {}
    assert not stray.exists()
    a.stop()
    assert not alive(r["zygote_pid"], start_time(r["zygote_pid"]) or -1)
    assert not a.shm.exists()


def test_corrupt_segment_is_detected_rebuilt_and_its_replicas_recycled(agent, minilm3):
    r = agent.spawn(minilm3, 2)
    ref = embed(r)
    seg = agent.shm / "all-MiniLM-L6-v2--stage-2.safetensors"
    with open(seg, "r+b") as f:  # flip bytes in the tensor data, size unchanged
        f.seek(seg.stat().st_size // 2)
        f.write(b"\xff" * 64)
    nxt = agent.spawn(minilm3, 2, index=1)  # the fingerprint changed: re-hashed, rebuilt
    assert nxt["tier"] == "T2" and nxt["zygote_pid"] != r["zygote_pid"]
    assert embed(nxt)["digest"] == ref["digest"]
    st = agent({"op": "status"})["status"]
    assert st["cache"]["corruptions"] == 1 and st["recycled"] == 1
    assert r["pid"] not in [x["pid"] for x in st["replicas"]]  # it mapped the bad pages
    time.sleep(0.2)
    assert not alive(r["pid"], r["started"])
    seg.write_bytes(seg.read_bytes()[:-100])  # truncated: caught by the periodic scrub too
    assert agent({"op": "scrub"})["rebuilt"] == ["all-MiniLM-L6-v2--stage-2"]


def test_metrics(agent, minilm3):
    agent.spawn(minilm3, 1)
    agent.spawn(minilm3, 1, index=1)
    text = requests.get(f"http://127.0.0.1:{agent.port}/metrics", timeout=5).text
    for line in ('quart_keys_spawn_seconds_count{tier="T0"} 1.0',
                 'quart_keys_spawn_seconds_count{tier="T3"} 1.0',
                 "quart_keys_zygotes_alive 1.0", 'quart_keys_cache_hits_total{tier="T1"} 1.0',
                 'quart_keys_replicas{function_name="cow-1"} 2.0'):
        assert line in text, line
    assert 'quart_keys_cache_bytes{tier="T1"}' in text
    assert requests.get(f"http://127.0.0.1:{agent.port}/healthz", timeout=5).status_code == 200


def test_fresh_forks_answer_bitwise_like_a_warm_replica_first_call_included(agent, minilm3):
    """Regression: a request thread's first GEMMs ran on OpenMP's default thread count (the
    core count), not QUART_TORCH_THREADS, until torch's lazy per-thread init caught up, so a
    fresh replica's first answers differed in the last bits (functions/stage/compute.py).
    OMP_NUM_THREADS=2 is that default on a 2-core node, set so the test does not depend on
    the machine's core count."""
    from functions.stage.bert import Stage
    from functions.stage.codec import CONTENT_TYPE, encode

    st0, st1 = Stage.load(minilm3, 0), Stage.load(minilm3, 1)
    payloads = []
    for batch in (["same answer"], ["still serving"], ["Hello!", "first sentence"],
                  ["The quick brown fox jumps over the lazy dog."]):
        ids, mask = st0.tokenize(batch)
        h = st1.forward(st0.forward(ids, mask), mask)
        payloads.append(encode(h, mask, {"model": "all-MiniLM-L6-v2", "stage": "1",
                                         "stages": "3"}))
    env = {"QUART_NEXT_FUNCTION": "", "QUART_TORCH_THREADS": "1", "OMP_NUM_THREADS": "2"}

    def ask(rep: dict) -> list:
        out = []
        for p in payloads:  # one request at a time: each lands on a worker thread of its own
            r = requests.post(rep["url"], data=p, headers={"Content-Type": CONTENT_TYPE},
                              timeout=60)
            assert r.status_code == 200, r.text
            out.append(r.json()["embeddings"])
        return out

    warm = agent.spawn(minilm3, 2, "det", handler=STAGE_HANDLER, env=env)
    for _ in range(3):  # 12 requests: every one of its 4 worker threads has computed
        ask(warm)
    want = ask(warm)
    for i in range(1, 4):
        fresh = agent.spawn(minilm3, 2, "det", index=i, handler=STAGE_HANDLER, env=env)
        assert fresh["tier"] == "T0" and fresh["zygote_pid"] == warm["zygote_pid"]
        answers = [ask(fresh) for _ in range(2)]  # its threads' first calls, then warm ones
        for k, got in enumerate(answers):
            for j, (g, w) in enumerate(zip(got, want)):
                assert g == w, f"replica {i}, round {k}, batch {j}: max |diff| " \
                    f"{max(abs(a - b) for ga, wa in zip(g, w) for a, b in zip(ga, wa)):.3g}"
