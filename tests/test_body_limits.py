"""The body limits of a pipeline stage (contracts/body_limits.py) admit the largest request
the stage itself accepts and little more, and the stage's JSON reading (codec.read_json)
refuses what would have been a 500."""
from __future__ import annotations

import json

import pytest
import torch

from contracts.body_limits import function_body_limit, stage_body_limit
from functions.stage.codec import PayloadError, encode, read_json

BERT = {"architecture": "bert", "max_seq_length": 256, "config": {"hidden_size": 384}}


def test_stage0_limit_admits_the_largest_valid_request_however_it_is_escaped():
    limit = stage_body_limit({"QUART_STAGE": "0"}, BERT)
    widest = json.dumps({"inputs": ["\U0001f600" * 10000] * 64}).encode()  # \\ud83d\\ude00
    assert len(widest) <= limit < len(widest) * 1.01
    small = stage_body_limit({"QUART_STAGE": "0", "QUART_MAX_INPUTS": "4",
                              "QUART_MAX_INPUT_CHARS": "100"}, BERT)
    assert small < 10_000


def test_activation_limit_admits_a_full_batch_at_full_length():
    limit = stage_body_limit({"QUART_STAGE": "1"}, BERT)
    full = encode(torch.zeros(64, 256, 384), torch.ones(64, 256, dtype=torch.int64),
                  {"model": "all-MiniLM-L6-v2", "stage": "0", "stages": "3"})
    assert len(full) <= limit < len(full) * 1.01
    own = stage_body_limit({"QUART_STAGE": "1", "QUART_MAX_BODY_BYTES": "1000"}, BERT)
    assert own == 1000


def test_functions_without_a_partition_have_no_limit_here(tmp_path):
    assert function_body_limit({}, tmp_path) is None
    assert function_body_limit({"QUART_MODEL_DIR": "nowhere"}, tmp_path) is None
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(BERT))
    assert function_body_limit({"QUART_MODEL_DIR": "m", "QUART_STAGE": "2"}, tmp_path) == \
        stage_body_limit({"QUART_STAGE": "2"}, BERT)


@pytest.mark.parametrize("body, needle", [
    (b'{"a":' * 50000 + b"1" + b"}" * 50000, "nested"),
    (b'{"inputs": ' + b"[" * 9 + b"]" * 9 + b"}", "nested more than 8"),
    (b'{"inputs": ["\\ud800"]}', "lone surrogate"),
    (b'{"inputs": ["\xed\xa0\x80"]}', "not UTF-8"),
    (b"{nope", "malformed JSON"),
])
def test_stage_json_reading_refuses_with_400(body, needle):
    with pytest.raises(PayloadError) as e:
        read_json(body)
    assert e.value.status == 400 and needle in str(e.value)
    assert read_json(b'{"inputs": ["\\ud83d\\ude00"]}') == {"inputs": ["\U0001f600"]}
