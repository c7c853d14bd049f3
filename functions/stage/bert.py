"""A BERT encoder cut into stages, in plain torch.

Why not ``transformers.BertModel``: importing transformers' BERT module costs
about 5 s per cold replica on this machine (torch alone about 2.5 s), and its
layer API changed in v5.  The maths is small and fixed; the tests check it
against transformers and sentence-transformers to 1e-5.

A stage owns a layer range ``[first, last)``; stage 0 also owns the tokenizer
and the embeddings, the last stage also owns pooling (mean over the attention
mask, then L2 normalisation, as sentence-transformers does for
all-MiniLM-L6-v2).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

MANIFEST = "manifest.json"  # contracts.manifest's: this folder ships alone, imports nothing of ours
TOKENIZER = "tokenizer/tokenizer.json"


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: d[k] for k in names if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def layer_param_names(i: int) -> list[str]:
    p = f"encoder.layer.{i}."
    return [p + s for s in (
        "attention.self.query.weight", "attention.self.query.bias",
        "attention.self.key.weight", "attention.self.key.bias",
        "attention.self.value.weight", "attention.self.value.bias",
        "attention.output.dense.weight", "attention.output.dense.bias",
        "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
        "intermediate.dense.weight", "intermediate.dense.bias",
        "output.dense.weight", "output.dense.bias",
        "output.LayerNorm.weight", "output.LayerNorm.bias",
    )]


EMBEDDING_PARAMS = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
]


def _act(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)  # exact erf form, as BERT's "gelu"
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"unsupported hidden_act {name!r}")


def embed(w: dict[str, torch.Tensor], cfg: BertConfig, input_ids: torch.Tensor) -> torch.Tensor:
    """Word + absolute position + token-type(0) embeddings, then LayerNorm."""
    seq = input_ids.shape[1]
    h = w["embeddings.word_embeddings.weight"][input_ids]
    h = h + w["embeddings.position_embeddings.weight"][:seq].unsqueeze(0)
    h = h + w["embeddings.token_type_embeddings.weight"][0]
    return F.layer_norm(h, (cfg.hidden_size,), w["embeddings.LayerNorm.weight"],
                        w["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)


def encoder_layer(w: dict[str, torch.Tensor], cfg: BertConfig, i: int, h: torch.Tensor,
                  additive_mask: torch.Tensor) -> torch.Tensor:
    """One post-LayerNorm transformer block (Devlin et al. 2019, Vaswani et al. 2017)."""
    p = f"encoder.layer.{i}."
    b, t, d = h.shape
    nh = cfg.num_attention_heads
    hd = d // nh

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, t, nh, hd).transpose(1, 2)

    q = heads(F.linear(h, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
    k = heads(F.linear(h, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
    v = heads(F.linear(h, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask,
                                         scale=1.0 / math.sqrt(hd))
    ctx = ctx.transpose(1, 2).reshape(b, t, d)
    a = F.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
    a = F.layer_norm(a + h, (d,), w[p + "attention.output.LayerNorm.weight"],
                     w[p + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps)
    m = _act(F.linear(a, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]),
             cfg.hidden_act)
    o = F.linear(m, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
    return F.layer_norm(o + a, (d,), w[p + "output.LayerNorm.weight"],
                        w[p + "output.LayerNorm.bias"], cfg.layer_norm_eps)


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B,T] 0/1 mask -> [B,1,1,T] additive mask (0 keep, dtype-min drop)."""
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


def mean_pool_normalize(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers Pooling(mean) followed by Normalize (L2)."""
    m = attention_mask.unsqueeze(-1).to(h.dtype)
    summed = (h * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `quart-faas partition` first")
    return json.loads(path.read_text())


def stage_weights(model_dir: Path, manifest: dict[str, Any], index: int, verify: bool,
                  weights_path: str | Path | None) -> dict[str, torch.Tensor]:
    """One stage's tensors, for every architecture: keys_manager's T1 segment mapped
    copy-on-write when given (its size checked against the manifest, its hash was checked
    when it was published), else the partition's file, its sha256 checked when ``verify``."""
    from safetensors.torch import load_file

    n = manifest["num_stages"]
    if not 0 <= index < n:
        raise ValueError(f"stage {index} out of range: {model_dir} has {n} stages")
    info = manifest["stages"][index]
    if weights_path is not None:
        from keys_manager.segment import map_stage

        path = Path(weights_path)
        if path.stat().st_size != int(info["file_bytes"]):
            raise ValueError(f"{path}: {path.stat().st_size} bytes, the manifest says "
                             f"{info['file_bytes']} (truncated segment?)")
        return map_stage(path)
    path = model_dir / info["file"]
    if verify and sha256_file(path) != info["sha256"]:
        raise ValueError(f"{path}: sha256 does not match the manifest (corrupted file?)")
    return load_file(str(path))


class Stage:
    """Weights and maths of one stage; holds no request state, so it is thread-safe."""

    def __init__(self, manifest: dict[str, Any], index: int, weights: dict[str, torch.Tensor],
                 model_dir: Path | None = None):
        self.manifest = manifest
        self.index = index
        self.info = manifest["stages"][index]
        self.cfg = BertConfig.from_dict(manifest["config"])
        self.first, self.last = self.info["layers"]
        self.is_first = index == 0
        self.is_last = index == manifest["num_stages"] - 1
        self.weights = weights
        self.tokenizer = None
        self.max_seq_length = int(manifest.get("max_seq_length", 256))
        if self.is_first and model_dir is not None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(Path(model_dir) / TOKENIZER))
            tok.enable_truncation(max_length=self.max_seq_length)
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            self.tokenizer = tok

    @classmethod
    def load(cls, model_dir: str | Path, index: int, verify: bool = True,
             weights_path: str | Path | None = None) -> Stage:
        """Read the stage from ``model_dir``; or, with ``weights_path`` (keys_manager's T1
        segment, verified against the manifest before it was published), map that file
        copy-on-write so every replica on the node shares one copy of the pages."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        return cls(manifest, index, stage_weights(model_dir, manifest, index, verify,
                                                  weights_path), model_dir)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("only stage 0 owns the tokenizer")
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        return ids, mask

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Stage 0 takes token ids, the others hidden states; returns hidden states."""
        h = embed(self.weights, self.cfg, x) if self.is_first else x
        am = additive_mask(attention_mask, h.dtype)
        for i in range(self.first, self.last):
            h = encoder_layer(self.weights, self.cfg, i, h, am)
        return h

    @torch.inference_mode()
    def pool(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool_normalize(h, attention_mask)


class Monolith:
    """Every stage of a partition in one process: the baseline the pipeline must equal."""

    def __init__(self, model_dir: str | Path, verify: bool = True):
        manifest = read_manifest(Path(model_dir))
        self.stages = [Stage.load(model_dir, i, verify) for i in range(manifest["num_stages"])]

    def encode(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.stages[0].tokenize(texts)
        h = ids
        for s in self.stages:
            h = s.forward(h, mask)
        return self.stages[-1].pool(h, mask)
