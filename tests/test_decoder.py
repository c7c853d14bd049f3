"""The OPT decoder pipeline in-process: partition, maths vs transformers, stages over real HTTP.

The reference is ``transformers.OPTForCausalLM`` holding the same seeded weights
(loaded from the partition's own tensor generator), so every comparison is
between two independent implementations of OPT.
"""
from __future__ import annotations

import json
import time

import pytest
import requests
import torch
from safetensors import safe_open

from functions.decoder_partition import opt_spec, seeded_tensor_fn
from functions.partitioner import PartitionError, partition
from functions.stage.bert import sha256_file
from functions.stage.decoder_wire import STEP_CONTENT_TYPE, SessionStore, encode_step
from functions.stage.opt import DecoderMonolith, DecoderStage, KVCache, param_shapes
from tests.decoder_env import Event, Gateway, stage

torch.set_num_threads(1)  # as the replicas (QUART_TORCH_THREADS=1); 2 cores are shared
PROMPTS = ["Hello world", "", "naïve café — 東京 😀", "The quick brown fox jumps over"]
N = 24


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory):
    out = tmp_path_factory.mktemp("opt") / "opt-tiny-3"
    partition(out, 3, model="opt-tiny-seeded")
    return out


@pytest.fixture(scope="module")
def hf():
    """transformers' OPT with the partition's seeded weights."""
    from transformers import OPTConfig, OPTForCausalLM

    spec = opt_spec("opt-tiny-seeded")
    model = OPTForCausalLM(OPTConfig(**spec.to_dict())).eval()
    get = seeded_tensor_fn(spec, 0)
    missing, unexpected = model.load_state_dict({n: get(n) for n in param_shapes(spec)},
                                                strict=False)
    assert not missing and not unexpected
    return model


def hf_greedy(hf, stage0: DecoderStage, prompt: str, n: int = N) -> list[int]:
    ids = torch.tensor([stage0.tokenizer.encode(prompt)])
    out = hf.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=1, eos_token_id=2)
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def refs(hf, tiny3):
    s0 = DecoderStage.load(tiny3, 0)
    return {p: hf_greedy(hf, s0, p) for p in PROMPTS}


@pytest.fixture(scope="module")
def gw(tiny3):
    """Stages 0..2 behind a real HTTP gateway; stage 1 has two replicas (no affinity)."""
    g = Gateway()
    s = [stage(tiny3, k, 3, g.url) for k in range(3)]
    g.add("opt-stage-0", s[0])
    g.add("opt-stage-1", s[1])
    g.add("opt-stage-2", s[2])
    g.stages = s
    yield g
    g.close()


def post(gw, doc, **kw):
    return requests.post(f"{gw.url}/function/opt-stage-0", json=doc, timeout=60, **kw)


# ------------------------------------------------------------------ partition and maths

def test_partition_layout_manifest_and_checksums(tiny3):
    m = json.loads((tiny3 / "manifest.json").read_text())
    assert m["architecture"] == "opt" and m["model"] == "opt-tiny-seeded"
    assert m["num_stages"] == 3 and [s["layers"] for s in m["stages"]] == [[0, 2], [2, 3], [3, 4]]
    assert m["tokenizer_spec"]["type"] == "bytes"
    for s in m["stages"]:
        path = tiny3 / s["file"]
        assert sha256_file(path) == s["sha256"] and path.stat().st_size == s["file_bytes"]
        with safe_open(str(path), "pt") as f:
            names = set(f.keys())
        assert ("model.decoder.embed_tokens.weight" in names) == (s["index"] == 0)
        assert ("lm_head.weight" in names) == (s["index"] == 2)
        assert all(f"layers.{i}." in n for n in names if ".layers." in n
                   for i in [int(n.split(".layers.")[1].split(".")[0])]
                   if s["layers"][0] <= i < s["layers"][1])
        assert not any(f".layers.{i}." in n for n in names
                       for i in range(4) if not s["layers"][0] <= i < s["layers"][1])


def test_partition_refuses_more_stages_than_layers(tmp_path):
    with pytest.raises(PartitionError, match="larger than the model's 4 layers"):
        partition(tmp_path / "x", 5, model="opt-tiny-seeded")
    assert not (tmp_path / "x").exists()


def test_125m_config_is_transformers_opt_125m():
    spec = opt_spec("opt-125m-seeded")
    assert (spec.num_hidden_layers, spec.hidden_size, spec.num_attention_heads, spec.ffn_dim,
            spec.vocab_size) == (12, 768, 12, 3072, 50272)
    n = sum(torch.Size(s).numel() for k, s in param_shapes(spec).items() if k != "lm_head.weight")
    assert 125.0e6 < n < 125.5e6  # facebook/opt-125m: 125.2M parameters (lm_head tied)


def test_logits_equal_transformers(tiny3, hf):
    mono = DecoderMonolith(tiny3)
    ids = torch.tensor([mono.stages[0].tokenizer.encode("Hello world")])
    h = ids
    for s in mono.stages:
        h = s.forward(h, 0, KVCache())
    with torch.no_grad():
        ref = hf(ids).logits
    assert (mono.stages[-1].logits(h) - ref).abs().max().item() < 1e-4


def test_monolith_greedy_equals_transformers(tiny3, refs):
    mono = DecoderMonolith(tiny3)
    for p, ref in refs.items():
        assert mono.generate(p, N) == ref
    assert len({t for r in refs.values() for t in r}) > 20  # the tokens depend on the context


# ------------------------------------------------------------------ the pipeline over HTTP

def test_pipeline_streams_the_greedy_tokens_of_transformers(gw, refs):
    for p, ref in refs.items():
        with post(gw, {"prompt": p, "max_new_tokens": N}, stream=True) as r:
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
            assert [t.split(";")[0] for t in r.headers["Server-Timing"].split(", ")] == [
                "stage0", "stage1", "stage2"]
            lines = [json.loads(x) for x in r.iter_lines()]
        tokens, summary = [x["token"] for x in lines[:-1]], lines[-1]
        assert tokens == ref and summary["tokens"] == ref and summary["done"]
        assert [x["index"] for x in lines[:-1]] == list(range(len(ref)))
        assert summary["finish_reason"] == ("eos" if ref[-1] == 2 else "length")
        assert summary["text"].startswith("".join(x["text"] for x in lines[:-1]))  # + flush
        assert 0 < summary["ttft_ms"] <= lines[-2]["ms"] <= summary["total_ms"]
        assert set(summary["stage_ms"]) == {"stage0", "stage1", "stage2"}


def test_unstreamed_answer_and_kv_sessions_are_released(gw, refs):
    before = [s.describe()["kv"] for s in gw.stages[1:]]
    r = post(gw, {"prompt": PROMPTS[0], "max_new_tokens": N, "stream": False})
    assert r.status_code == 200 and r.json()["tokens"] == refs[PROMPTS[0]]
    assert r.json()["finish_reason"] == "length"
    for s, b in zip(gw.stages[1:], before):
        kv = s.describe()["kv"]
        assert kv["hits"] - b["hits"] == N - 1  # one prefill, then every step extends the cache
        assert kv["sessions"] == b["sessions"]  # the final step dropped the session


def test_kv_miss_on_another_replica_is_rebuilt_and_tokens_stay_equal(gw, tiny3, refs):
    extra = stage(tiny3, 1, 3, gw.url)
    gw.add("opt-stage-1", gw.stages[1], extra)  # round-robin: every step changes replica
    try:
        r = post(gw, {"prompt": PROMPTS[3], "max_new_tokens": N, "stream": False})
        assert r.status_code == 200 and r.json()["tokens"] == refs[PROMPTS[3]]
        kv = [gw.stages[1].describe()["kv"], extra.describe()["kv"]]
        assert sum(k["misses"] for k in kv) > 0
        assert gw.stages[2].describe()["kv"]["rebuilds"] > 0  # resent from position 0
    finally:
        gw.add("opt-stage-1", gw.stages[1])


@pytest.mark.parametrize("doc,needle", [
    ({"prompt": 3}, "JSON object"),
    ({"text": "x"}, "JSON object"),
    ({"prompt": "x", "max_new_tokens": 0}, "1..100"),
    ({"prompt": "x", "max_new_tokens": 101}, "1..100"),
    ({"prompt": "x", "max_new_tokens": "5"}, "1..100"),
    ({"prompt": "x", "max_new_tokens": True}, "1..100"),
    ({"prompt": "x", "stream": "yes"}, "'stream'"),
    ({"prompt": "x", "temperature": 1}, "unknown field"),
    ({"prompt": "y" * 201}, "over the limit of 200"),
    ({"prompt": "z" * 100, "max_new_tokens": 30}, "exceed the model's 128 positions"),
])
def test_stage0_bad_input_gets_4xx_and_keeps_serving(gw, refs, doc, needle):
    r = post(gw, doc)
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    r = post(gw, {"prompt": PROMPTS[0], "max_new_tokens": 3, "stream": False})
    assert r.status_code == 200 and r.json()["tokens"] == refs[PROMPTS[0]][:3]


def test_stage0_refuses_malformed_json_methods_and_step_payloads(gw):
    s0 = gw.stages[0]
    for ev, status in [(Event(b"{nope", {"Content-Type": "application/json"}), 400),
                       (Event(b"\xff", {}), 400),
                       (Event(b"x", {"Content-Type": STEP_CONTENT_TYPE}), 415),
                       (Event(b"", {}, "DELETE"), 405)]:
        res = s0.handle(ev)
        assert res["statusCode"] == status and json.loads(res["body"])["stage"] == 0
    assert json.loads(s0.handle(Event(b"", {}, "GET"))["body"])["next"] == "opt-stage-1"


def _step(hidden, **meta):
    m = {"model": "opt-tiny-seeded", "stage": 0, "session": "s" * 16, "pos": 0, "final": False}
    m.update(meta)
    return encode_step(hidden, m["model"], m["stage"], m["session"], m["pos"], m["final"])


@pytest.mark.parametrize("body,ctype,status,needle", [
    (b"garbage", STEP_CONTENT_TYPE, 400, "malformed"),
    (b"", STEP_CONTENT_TYPE, 400, "empty"),
    (_step(torch.zeros(1, 2, 64)), "application/json", 415, "takes"),
    (_step(torch.zeros(2, 2, 64)), STEP_CONTENT_TYPE, 400, "shape [1, seq, 64]"),
    (_step(torch.zeros(1, 2, 65)), STEP_CONTENT_TYPE, 400, "shape [1, seq, 64]"),
    (_step(torch.zeros(1, 2, 64, dtype=torch.float64)), STEP_CONTENT_TYPE, 400, "float32"),
    (_step(torch.full((1, 2, 64), float("nan"))), STEP_CONTENT_TYPE, 400, "NaN"),
    (_step(torch.zeros(1, 2, 64), session="bad id!"), STEP_CONTENT_TYPE, 400, "session"),
    (_step(torch.zeros(1, 2, 64), pos=127), STEP_CONTENT_TYPE, 400, "outside 0..127"),
    (_step(torch.zeros(1, 2, 64), stage=1), STEP_CONTENT_TYPE, 409, "expects the output"),
    (_step(torch.zeros(1, 2, 64), model="other"), STEP_CONTENT_TYPE, 409, "model"),
    (_step(torch.zeros(1, 1, 64), pos=5, session="unknown-session"), STEP_CONTENT_TYPE, 409,
     "holds no KV cache"),
])
def test_later_stage_refuses_bad_steps_and_keeps_serving(gw, refs, body, ctype, status, needle):
    r = requests.post(f"{gw.url}/function/opt-stage-1", data=body,
                      headers={"Content-Type": ctype}, timeout=10)
    assert r.status_code == status and needle in r.json()["error"], r.text
    r = post(gw, {"prompt": PROMPTS[1], "max_new_tokens": 4, "stream": False})
    assert r.status_code == 200 and r.json()["tokens"] == refs[PROMPTS[1]][:4]


def test_next_stage_down_is_a_502_and_stage0_keeps_serving(tiny3):
    s0 = stage(tiny3, 0, 3, "http://127.0.0.1:9")
    res = s0.handle(Event(json.dumps({"prompt": "hi"}).encode(), {}))
    assert res["statusCode"] == 502 and "unreachable" in json.loads(res["body"])["error"]
    assert s0.handle(Event(b"", {}, "GET"))["statusCode"] == 200


def test_stream_reports_a_failure_after_the_first_token_in_band(gw):
    with post(gw, {"prompt": "abc", "max_new_tokens": 50}, stream=True) as r:
        it = r.iter_lines()
        first = json.loads(next(it))
        saved = gw.replicas.pop("opt-stage-1")  # the next stage disappears mid-generation
        try:
            rest = [json.loads(x) for x in it]
        finally:
            gw.add("opt-stage-1", *saved)
    assert first["index"] == 0 and r.status_code == 200
    assert rest[-1]["done"] and rest[-1]["status"] == 404 and "error" in rest[-1]


# ------------------------------------------------------------------ sessions

def test_session_store_bounds_count_bytes_and_idle_time():
    h = torch.zeros(1, 4, 8)
    st = SessionStore(max_sessions=2, max_bytes=1 << 20, ttl_s=60)
    for name in ("a" * 8, "b" * 8, "c" * 8):
        s = st.begin(name, 0)
        s.history, s.cache.length = h, 4
        st.end(name, final=False)
    assert st.stats()["sessions"] == 2 and st.begin("a" * 8, 4) is None  # LRU evicted
    assert st.begin("c" * 8, 4) is not None and st.begin("c" * 8, 5) is None  # wrong length
    st.end("c" * 8, final=True)
    assert st.stats()["sessions"] == 1
    small = SessionStore(max_sessions=8, max_bytes=100, ttl_s=60)
    s = small.begin("d" * 8, 0)
    s.history = h  # 128 bytes > 100
    small.end("d" * 8, final=False)
    assert small.stats()["sessions"] == 0 and small.stats()["evictions"] == 1
    idle = SessionStore(max_sessions=8, max_bytes=1 << 20, ttl_s=0.01)
    idle.begin("e" * 8, 0)
    time.sleep(0.02)
    assert idle.begin("e" * 8, 1) is None and idle.stats()["evictions"] == 1


def test_keys_manager_cache_serves_decoder_stages(tiny3, tmp_path, refs):
    """Decoder stages go through the same T3 -> T2 -> T1 cache and copy-on-write mapping."""
    from keys_manager.cache import ParamCache

    cache = ParamCache(tmp_path / "disk", tmp_path / "shm", 64 << 20)
    stages = []
    for k in range(3):
        e = cache.ensure(tiny3, k)
        assert e.tier == "T3" and e.path.stat().st_size == e.bytes
        stages.append(DecoderStage.load(tiny3, k, weights_path=e.path))
    caches = [KVCache() for _ in stages]
    x, pos, out = torch.tensor([stages[0].tokenizer.encode(PROMPTS[0])]), 0, []
    for _ in range(N):
        h = x
        for s, c in zip(stages, caches):
            h = s.forward(h, pos, c)
        pos += x.shape[1]
        out.append(stages[-1].next_token(h))
        x = torch.tensor([[out[-1]]])
    assert out == refs[PROMPTS[0]][:len(out)]
    cache.close()


def test_openapi_documents_the_decoder_stages_limits(gw):
    import schemathesis

    d0, d1 = gw.stages[0].openapi(), gw.stages[2].openapi()
    for d in (d0, d1):
        schemathesis.openapi.from_dict(json.loads(json.dumps(d)))  # parses as OpenAPI 3.0
    props = d0["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert props["properties"]["prompt"]["maxLength"] == 200
    assert props["properties"]["max_new_tokens"]["maximum"] == 100
    assert "409" in d1["paths"]["/"]["post"]["responses"]
    res = gw.stages[0].handle(Event(b"", {}, "PUT"))
    assert res["statusCode"] == 405 and res["headers"]["Allow"] == "GET, POST"
