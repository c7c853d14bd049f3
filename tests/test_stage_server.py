"""The stage server in-process: validation answers 4xx, and the last stage pools."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

from contracts import server_timing
from functions.stage.bert import Monolith, Stage
from functions.stage.codec import CONTENT_TYPE, encode
from functions.stage.config import StageConfig
from functions.stage.server import StageServer


@dataclass
class Event:
    body: bytes
    headers: dict = field(default_factory=dict)
    method: str = "POST"


def server(model_dir, stage, **env):
    base = {"QUART_MODEL_DIR": str(model_dir), "QUART_STAGE": str(stage),
            "QUART_NEXT_FUNCTION": "" if stage == 2 else f"s{stage + 1}",
            "QUART_GATEWAY_URL": "http://127.0.0.1:9", "QUART_MAX_INPUTS": "4",
            "QUART_MAX_INPUT_CHARS": "100", "QUART_MAX_BODY_BYTES": "500000"}
    base.update(env)
    return StageServer(StageConfig.from_env(base))


def js(**kw):
    return Event(json.dumps(kw).encode(), {"Content-Type": "application/json"})


def answer(res):
    return res["statusCode"], json.loads(res["body"])


@pytest.fixture(scope="module")
def s0(minilm3):
    return server(minilm3, 0)


@pytest.fixture(scope="module")
def s2(minilm3):
    return server(minilm3, 2)


@pytest.fixture(scope="module")
def acts(minilm3):
    """Activations entering stage 2 for two sentences, computed by stages 0 and 1."""
    st0, st1 = Stage.load(minilm3, 0), Stage.load(minilm3, 1)
    ids, mask = st0.tokenize(["first sentence", "second, longer sentence here"])
    return st1.forward(st0.forward(ids, mask), mask), mask


@pytest.mark.parametrize("event,status,needle", [
    (Event(b"{not json", {"Content-Type": "application/json"}), 400, "malformed JSON"),
    (Event(b"\xff\xfe", {}), 400, "malformed JSON"),
    (js(text=["a"]), 400, "inputs"),
    (Event(b"[1, 2]", {}), 400, "JSON object"),
    (js(inputs="just a string"), 400, "must be a list"),
    (js(inputs=[]), 400, "empty"),
    (js(inputs=["a", 3]), 400, "inputs[1] must be a string"),
    (js(inputs=[None]), 400, "inputs[0] must be a string"),
    (js(inputs=["x"] * 5), 400, "limit of 4"),
    (js(inputs=["x" * 101]), 400, "over the limit of 100"),
    (Event(b'{"inputs": ["' + b"x" * 500001 + b'"]}', {}), 413, "exceeds the limit"),
    (Event(b"", {"Content-Type": CONTENT_TYPE}), 415, "stage 0 takes JSON"),
    (Event(b"", {}, "DELETE"), 405, "not allowed"),
])
def test_stage0_refuses_bad_input_with_4xx(s0, event, status, needle):
    code, body = answer(s0.handle(event))
    assert code == status and needle in body["error"] and body["stage"] == 0


def test_stage0_get_describes_itself(s0):
    code, body = answer(s0.handle(Event(b"", {}, "GET")))
    assert code == 200 and body["layers"] == [0, 2] and body["next"] == "s1"


def test_stage0_unreachable_next_stage_is_502_not_a_trace(s0):
    code, body = answer(s0.handle(js(inputs=["hello"])))
    assert code == 502 and "s1" in body["error"] and body["stage"] == 1


def test_last_stage_pools_like_the_whole_model(minilm3, s2, acts):
    h, mask = acts
    res = s2.handle(Event(encode(h, mask, {"model": "all-MiniLM-L6-v2", "stage": "1"}),
                          {"Content-Type": CONTENT_TYPE}))
    code, body = answer(res)
    assert code == 200 and body["stages"] == 3 and body["model"] == "all-MiniLM-L6-v2"
    ref = Monolith(minilm3).encode(["first sentence", "second, longer sentence here"])
    assert (torch.tensor(body["embeddings"]) - ref).abs().max().item() <= 1e-6
    assert res["headers"]["Server-Timing"].startswith("stage2;dur=")
    assert [n for n, _ in server_timing.parse(res["headers"]["Server-Timing"])] == ["stage2"]


def _payload(h, m, meta=None):
    return Event(encode(h, m, meta or {"model": "all-MiniLM-L6-v2", "stage": "1"}),
                 {"Content-Type": CONTENT_TYPE})


def test_last_stage_refuses_bad_tensors(s2, acts):
    from safetensors.torch import save

    h, m = acts
    cases = [
        (Event(b"garbage bytes", {"Content-Type": CONTENT_TYPE}), 400, "malformed"),
        (Event(b"", {"Content-Type": CONTENT_TYPE}), 400, "empty"),
        (Event(encode(h, m, {})[:-10], {"Content-Type": CONTENT_TYPE}), 400, "malformed"),
        (_payload(h.double(), m), 400, "float32"),
        (_payload(h, m.int()), 400, "int64"),
        (_payload(h[..., :100].contiguous(), m), 400, "[batch, seq, 384]"),
        (_payload(h, m[:, :3].contiguous()), 400, "does not match"),
        (_payload(h[0], m), 400, "shape"),
        (_payload(torch.zeros(5, 2, 384), torch.ones(5, 2, dtype=torch.int64)), 400,
         "outside 1..4"),
        (_payload(torch.zeros(1, 300, 8), torch.ones(1, 300, dtype=torch.int64)), 400,
         "[batch, seq, 384]"),
        (_payload(torch.zeros(1, 257, 384), torch.ones(1, 257, dtype=torch.int64)), 400,
         "outside 1..256"),
        (_payload(h, m * 2), 400, "0/1"),
        (_payload(h * float("nan"), m), 400, "NaN"),
        (_payload(h, m, {"model": "other", "stage": "1"}), 409, "model"),
        (_payload(h, m, {"model": "all-MiniLM-L6-v2", "stage": "0"}), 409, "stage 1"),
        (Event(save({"hidden_states": h, "attention_mask": m, "x": m.clone()}),
               {"Content-Type": CONTENT_TYPE}), 400, "exactly"),
        (Event(b"{}", {"Content-Type": "application/json"}), 415, "takes"),
    ]
    for event, status, needle in cases:
        code, body = answer(s2.handle(event))
        assert (code, needle in body["error"]) == (status, True), (needle, body)
    code, _ = answer(s2.handle(_payload(h, m)))  # and it still serves
    assert code == 200


def test_config_mismatch_refuses_to_start(minilm3):
    with pytest.raises(SystemExit, match="QUART_STAGES=4"):
        server(minilm3, 2, QUART_STAGES="4")
    with pytest.raises(SystemExit, match="QUART_MODEL"):
        server(minilm3, 2, QUART_MODEL="bert-large")
    with pytest.raises(SystemExit, match="needs QUART_NEXT_FUNCTION"):
        server(minilm3, 1, QUART_NEXT_FUNCTION="")
    with pytest.raises(ValueError, match="out of range"):
        server(minilm3, 3)
    with pytest.raises(SystemExit, match="QUART_STAGE"):
        server(minilm3, 0, QUART_STAGE="zero")
