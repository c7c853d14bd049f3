"""An OPT decoder cut into stages, in plain torch, with a per-request KV cache.

Why not ``transformers.OPTForCausalLM`` in the replica: for the same reason as
``bert.py`` (a cold replica would pay seconds importing transformers), and
because a stage needs the layer loop cut at arbitrary points with its own KV
cache.  The maths follows ``transformers.models.opt.modeling_opt`` (learned
positions with offset 2, pre- or post-LayerNorm blocks, ReLU MLP, final
LayerNorm, ``lm_head`` tied to the token embeddings); the tests check greedy
generation against transformers with the same weights.

A stage owns layers ``[first, last)``; stage 0 also owns the byte tokenizer
and the embeddings, the last stage the final LayerNorm and ``lm_head``.
Parameter names are transformers' (``model.decoder.layers.3.fc1.weight``), so
a checkpoint's state dict loads into either side unchanged.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .bert import read_manifest, stage_weights

PREFIX = "model.decoder."
EMBED_TOKENS = PREFIX + "embed_tokens.weight"
EMBED_POSITIONS = PREFIX + "embed_positions.weight"
FINAL_LN = (PREFIX + "final_layer_norm.weight", PREFIX + "final_layer_norm.bias")
LM_HEAD = "lm_head.weight"
POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding: ids 0 and 1 of the table are unused


@dataclass(frozen=True)
class OPTSpec:
    """The fields of ``transformers.OPTConfig`` this implementation reads (same names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    ffn_dim: int
    max_position_embeddings: int
    do_layer_norm_before: bool = True
    activation_function: str = "relu"
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    word_embed_proj_dim: int | None = None
    pad_token_id: int = 1
    bos_token_id: int = 2
    eos_token_id: int = 2
    init_std: float = 0.02

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OPTSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def layer_param_names(i: int, spec: OPTSpec) -> list[str]:
    p = f"{PREFIX}layers.{i}."
    mats = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
            "fc1", "fc2"]
    names = [p + m + ".weight" for m in mats]
    if spec.enable_bias:
        names += [p + m + ".bias" for m in mats]
    if spec.layer_norm_elementwise_affine:
        names += [p + n for n in ("self_attn_layer_norm.weight", "self_attn_layer_norm.bias",
                                  "final_layer_norm.weight", "final_layer_norm.bias")]
    return names


def param_shapes(spec: OPTSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``OPTForCausalLM`` (with ``lm_head`` stored untied)."""
    h, f = spec.hidden_size, spec.ffn_dim
    s: dict[str, tuple[int, ...]] = {
        EMBED_TOKENS: (spec.vocab_size, h),
        EMBED_POSITIONS: (spec.max_position_embeddings + POSITION_OFFSET, h),
        FINAL_LN[0]: (h,), FINAL_LN[1]: (h,), LM_HEAD: (spec.vocab_size, h),
    }
    for i in range(spec.num_hidden_layers):
        for n in layer_param_names(i, spec):
            if ".fc1." in n:
                s[n] = (f, h) if n.endswith("weight") else (f,)
            elif ".fc2." in n:
                s[n] = (h, f) if n.endswith("weight") else (h,)
            elif n.endswith("proj.weight"):
                s[n] = (h, h)
            else:
                s[n] = (h,)
    return s


def _act(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"unsupported activation_function {name!r}")


@dataclass
class KVCache:
    """Keys and values of one request's past positions, per layer of one stage."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)    # [1, heads, T, head_dim]
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    length: int = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values)
                   for t in d.values())


def decoder_layer(w: dict[str, torch.Tensor], spec: OPTSpec, i: int, h: torch.Tensor,
                  cache: KVCache) -> torch.Tensor:
    """One OPT block over the new positions ``h`` [B, t, H]; appends their K/V to ``cache``."""
    p = f"{PREFIX}layers.{i}."
    b, t, d = h.shape
    nh = spec.num_attention_heads
    hd = d // nh

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, w[p + name + ".weight"], w.get(p + name + ".bias"))

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (d,), w.get(p + name + ".weight"), w.get(p + name + ".bias"))

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, t, nh, hd).transpose(1, 2)

    residual = h
    x = ln(h, "self_attn_layer_norm") if spec.do_layer_norm_before else h
    q = heads(lin(x, "self_attn.q_proj") * hd ** -0.5)  # scaled before the product, as OPT
    k, v = heads(lin(x, "self_attn.k_proj")), heads(lin(x, "self_attn.v_proj"))
    past = cache.length
    if i in cache.keys:
        k = torch.cat([cache.keys[i], k], dim=2)
        v = torch.cat([cache.values[i], v], dim=2)
    cache.keys[i], cache.values[i] = k, v
    # causal over absolute positions: query past+a sees keys 0..past+a
    allowed = torch.ones(t, past + t, dtype=torch.bool).tril(diagonal=past)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0)
    h = residual + lin(ctx.transpose(1, 2).reshape(b, t, d), "self_attn.out_proj")
    if not spec.do_layer_norm_before:
        h = ln(h, "self_attn_layer_norm")
    residual = h
    x = ln(h, "final_layer_norm") if spec.do_layer_norm_before else h
    h = residual + lin(_act(lin(x, "fc1"), spec.activation_function), "fc2")
    if not spec.do_layer_norm_before:
        h = ln(h, "final_layer_norm")
    return h


class ByteTokenizer:
    """Deterministic byte-level tokenizer, built here because nothing may be downloaded.

    UTF-8 byte ``b`` is id ``offset + b``; the prompt starts with ``</s>`` (id 2),
    as OPT's tokenizer does.  Ids outside the byte range (a seeded model
    produces plenty) are shown as ``<id>``.  It exists to exercise the serving
    path; it says nothing about text quality.
    """

    def __init__(self, spec: dict[str, Any], vocab_size: int):
        self.offset = int(spec.get("offset", 4))
        self.bos = int(spec.get("bos", 2))
        self.eos = int(spec.get("eos", 2))
        if self.offset + 256 > vocab_size:
            raise ValueError(f"vocab_size {vocab_size} cannot hold 256 bytes at offset "
                             f"{self.offset}")

    def encode(self, text: str) -> list[int]:
        return [self.bos] + [self.offset + b for b in text.encode("utf-8")]

    def decoder(self) -> _StreamDecoder:
        return _StreamDecoder(self.offset)


class _StreamDecoder:
    """Token by token to text: multi-byte UTF-8 characters appear once complete."""

    def __init__(self, offset: int):
        self.offset = offset
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def piece(self, token: int) -> str:
        if self.offset <= token < self.offset + 256:
            return self.utf8.decode(bytes([token - self.offset]))
        return self.utf8.decode(b"", final=True) + f"<{token}>"

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


class DecoderStage:
    """Weights and maths of one decoder stage; request state lives in the caller's KVCache."""

    def __init__(self, manifest: dict[str, Any], index: int, weights: dict[str, torch.Tensor]):
        self.manifest = manifest
        self.index = index
        self.info = manifest["stages"][index]
        self.spec = OPTSpec.from_dict(manifest["config"])
        self.first, self.last = self.info["layers"]
        self.is_first = index == 0
        self.is_last = index == manifest["num_stages"] - 1
        self.weights = weights
        self.max_positions = self.spec.max_position_embeddings
        self.tokenizer = (ByteTokenizer(manifest.get("tokenizer_spec") or {},
                                        self.spec.vocab_size) if self.is_first else None)

    @classmethod
    def load(cls, model_dir: str | Path, index: int, verify: bool = True,
             weights_path: str | Path | None = None) -> DecoderStage:
        """As ``bert.Stage.load``: the manifest's file, or keys_manager's T1 segment mapped
        copy-on-write (so forked replicas share the pages)."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        if manifest.get("architecture") != "opt":
            raise ValueError(f"{model_dir} holds a {manifest.get('architecture')!r} partition, "
                             "not an OPT decoder")
        return cls(manifest, index, stage_weights(model_dir, manifest, index, verify,
                                                  weights_path))

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, pos: int, cache: KVCache) -> torch.Tensor:
        """New positions ``pos..pos+t-1``: token ids [1, t] at stage 0, else hidden [1, t, H].

        The cache must hold exactly ``pos`` positions (``pos == 0``: a new one).
        """
        if cache.length != pos:
            raise ValueError(f"KV cache holds {cache.length} positions, step starts at {pos}")
        w, t = self.weights, x.shape[1]
        if self.is_first:
            ids = torch.arange(pos, pos + t) + POSITION_OFFSET
            h = w[EMBED_TOKENS][x] + w[EMBED_POSITIONS][ids].unsqueeze(0)
        else:
            h = x
        for i in range(self.first, self.last):
            h = decoder_layer(w, self.spec, i, h, cache)
        cache.length = pos + t
        return h

    @torch.inference_mode()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and ``lm_head`` over hidden states [B, t, H] (last stage only)."""
        if self.spec.do_layer_norm_before:
            h = F.layer_norm(h, (self.spec.hidden_size,), self.weights.get(FINAL_LN[0]),
                             self.weights.get(FINAL_LN[1]))
        head = self.weights[LM_HEAD] if LM_HEAD in self.weights else self.weights[EMBED_TOKENS]
        return F.linear(h, head)

    def next_token(self, h: torch.Tensor) -> int:
        """Greedy choice from the last position."""
        return int(self.logits(h[:, -1:])[0, -1].argmax())


class DecoderMonolith:
    """Every stage of a decoder partition in one process: the baseline the pipeline equals."""

    def __init__(self, model_dir: str | Path, verify: bool = True):
        manifest = read_manifest(Path(model_dir))
        self.stages = [DecoderStage.load(model_dir, i, verify)
                       for i in range(manifest["num_stages"])]

    def generate(self, prompt: str, max_new_tokens: int) -> list[int]:
        first = self.stages[0]
        assert first.tokenizer is not None
        x = torch.tensor([first.tokenizer.encode(prompt)])
        caches = [KVCache() for _ in self.stages]
        pos, out = 0, []
        for _ in range(max_new_tokens):
            h = x
            for s, c in zip(self.stages, caches):
                h = s.forward(h, pos, c)
            pos += x.shape[1]
            tok = self.stages[-1].next_token(h)
            out.append(tok)
            if tok == first.tokenizer.eos:
                break
            x = torch.tensor([[tok]])
        return out
