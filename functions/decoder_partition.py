"""Cut an OPT decoder into pipeline stages (``quart-faas partition --model opt-125m-seeded``).

Same layout and guarantees as the encoder partition (``partitioner.py``): a
temporary sibling directory renamed into place, ``manifest.json`` with a
sha256 per stage file, so keys_manager's cache moves and verifies decoder
stages exactly as it does encoder stages.  Differences:

- ``architecture: "opt"``; stage 0 holds the token and position embeddings,
  the last stage the final LayerNorm and ``lm_head`` (a copy of the token
  embeddings: OPT ties them, but the two ends of the pipeline are different
  processes, so the tie costs ``vocab x hidden`` floats twice on disk).
- The tokenizer is the deterministic byte-level one of ``stage/opt.py``
  (``tokenizer_spec`` in the manifest): nothing can be downloaded here.

Weights come from a ``transformers.OPTConfig`` with seeded values (one
generator per tensor, seeded from ``(seed, name)``, OPT's initialiser:
N(0, init_std), LayerNorm 1/0, biases 0, the padding row zero), or from a
local Hugging Face OPT directory (``model.safetensors``).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from contracts.manifest import MANIFEST
from functions.partition_layout import (
    FORMAT,
    PartitionError,
    split_layers,
    stable_seed,
    staged_into,
)
from functions.stage.bert import sha256_file
from functions.stage.opt import (
    EMBED_POSITIONS,
    EMBED_TOKENS,
    FINAL_LN,
    LM_HEAD,
    OPTSpec,
    layer_param_names,
    param_shapes,
)

# Shapes of facebook/opt-125m (Zhang et al. 2022, Table 1); "tiny" is for tests.  The tiny
# model's init_std is 0.3 so that its greedy tokens depend on the context (with 0.02 a
# small random model repeats one token, and a token-equality test would prove little).
DECODERS: dict[str, dict[str, Any]] = {
    "opt-125m-seeded": {"vocab_size": 50272, "hidden_size": 768, "num_hidden_layers": 12,
                        "num_attention_heads": 12, "ffn_dim": 3072,
                        "max_position_embeddings": 2048, "init_std": 0.02},
    "opt-tiny-seeded": {"vocab_size": 320, "hidden_size": 64, "num_hidden_layers": 4,
                        "num_attention_heads": 4, "ffn_dim": 256,
                        "max_position_embeddings": 128, "init_std": 0.3},
}
TOKENIZER_SPEC = {"type": "bytes", "offset": 4, "bos": 2, "eos": 2}


def is_decoder(name: str | None) -> bool:
    """A seeded decoder name (``opt-125m-seeded``, or ``opt-125m`` given to --synthetic)."""
    key = (name or "").strip().lower()
    return key in DECODERS or f"{key}-seeded" in DECODERS


def opt_spec(name: str) -> OPTSpec:
    """The config through ``transformers.OPTConfig`` (its defaults fill what we leave out)."""
    from transformers import OPTConfig

    key = name.strip().lower()
    key = key if key in DECODERS else f"{key}-seeded"
    hf = OPTConfig(**DECODERS[key]).to_dict()
    return OPTSpec.from_dict(hf)


def seeded_tensor_fn(spec: OPTSpec, seed: int) -> Callable[[str], torch.Tensor]:
    shapes = param_shapes(spec)

    def make(name: str) -> torch.Tensor:
        if name == LM_HEAD:
            name = EMBED_TOKENS  # tied
        shape = shapes[name]
        if "layer_norm" in name:
            return torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        if name.endswith(".bias"):
            return torch.zeros(shape)
        g = torch.Generator().manual_seed(stable_seed(seed, name))
        t = torch.randn(shape, generator=g) * spec.init_std
        if name == EMBED_TOKENS:
            t[spec.pad_token_id] = 0.0
        return t

    return make


def partition_decoder(out: str | Path, stages: int, name: str, seed: int = 0,
                      split: list[int] | None = None, force: bool = False,
                      progress: Callable[[str], None] | None = None,
                      model_dir: Path | None = None) -> dict[str, Any]:
    """Write an OPT partition to ``out`` (seeded ``name``, or ``model_dir``'s checkpoint)."""
    say = progress or (lambda _m: None)
    out = Path(out).expanduser().resolve()
    if out.exists() and not force:
        raise PartitionError(f"{out} already exists (use --force to replace it)")
    if model_dir is None:
        spec = opt_spec(name)
        key = name.strip().lower()
        display = key if key in DECODERS else f"{key}-seeded"
        source = f"seeded:{display}:seed={seed}"
        get = seeded_tensor_fn(spec, seed)
    else:
        display, source, spec, get = _from_checkpoint(model_dir)
    if spec.word_embed_proj_dim not in (None, spec.hidden_size):
        raise PartitionError("OPT models with project_in/out (word_embed_proj_dim != "
                             "hidden_size, e.g. opt-350m) are not supported")
    ranges = split_layers(spec.num_hidden_layers, stages, split)
    with staged_into(out) as tmp:
        manifest = _write(tmp, display, source, spec, ranges, get, say)
    return manifest


def _from_checkpoint(model_dir: Path) -> tuple[str, str, OPTSpec, Callable[[str], torch.Tensor]]:
    from safetensors import safe_open

    raw = json.loads((model_dir / "config.json").read_text())
    spec = OPTSpec.from_dict(raw)
    handle = safe_open(str(model_dir / "model.safetensors"), "pt")
    names = set(handle.keys())

    def get(n: str) -> torch.Tensor:
        if n == LM_HEAD and n not in names:
            n = EMBED_TOKENS  # tied weights are saved once
        return handle.get_tensor(n).contiguous()

    return model_dir.name, str(model_dir), spec, get


def _write(tmp: Path, name: str, source: str, spec: OPTSpec, ranges: list[tuple[int, int]],
           get: Callable[[str], torch.Tensor], say: Callable[[str], None]) -> dict[str, Any]:
    from safetensors.torch import save_file

    entries = []
    n = len(ranges)
    for k, (a, b) in enumerate(ranges):
        names = [EMBED_TOKENS, EMBED_POSITIONS] if k == 0 else []
        names += [p for i in range(a, b) for p in layer_param_names(i, spec)]
        if k == n - 1:
            names += list(FINAL_LN) + ([LM_HEAD] if n > 1 else [])  # one stage: use the tie
        tensors = {p: get(p).to(torch.float32).contiguous() for p in names}
        fname = f"stage-{k}.safetensors"
        save_file(tensors, str(tmp / fname), metadata={
            "model": name, "stage": str(k), "layers": f"{a}-{b}", "format": FORMAT})
        params = sum(t.numel() for t in tensors.values())
        entries.append({
            "index": k, "file": fname, "layers": [a, b], "embeddings": k == 0,
            "tokenizer": k == 0, "lm_head": k == n - 1, "pooling": None,
            "parameters": params, "parameter_bytes": sum(t.numel() * t.element_size()
                                                         for t in tensors.values()),
            "file_bytes": (tmp / fname).stat().st_size,
            "sha256": sha256_file(tmp / fname), "dtype": "float32",
        })
        del tensors
        say(f"stage {k}: layers {a}..{b - 1}, {params / 1e6:.1f}M parameters")
    manifest = {
        "format": FORMAT, "model": name, "source": source, "architecture": "opt",
        "config": spec.to_dict(), "num_stages": n, "num_layers": spec.num_hidden_layers,
        "dtype": "float32", "pooling": None, "generation": "greedy",
        "max_seq_length": spec.max_position_embeddings,
        "tokenizer": "bytes", "tokenizer_spec": dict(TOKENIZER_SPEC), "stages": entries,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
