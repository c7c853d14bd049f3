"""Cut a BERT-family encoder into pipeline stages (``quart-faas partition``).

OPT decoders (seeded ``opt-125m-seeded``, or a local OPT checkpoint) are handed to
``decoder_partition.py``, which writes the same layout (``partition_layout.py``);
``emulated:bert-large`` (an emulated accelerator, no weights) to ``emulated_partition.py``.

Output (written to a temporary sibling directory, then renamed into place, so a
failure never leaves a half-written partition where a replica could load it)::

    OUT/manifest.json          model, config, and per stage: index, layer range,
                               parameters, parameter bytes, sha256, dtype
    OUT/stage-K.safetensors    the stage's tensors, original parameter names
    OUT/tokenizer/             stage 0's tokenizer (tokenizer.json, vocab.txt, ...)
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.manifest import MANIFEST
from functions.decoder_partition import is_decoder, partition_decoder
from functions.emulated_partition import is_emulated, partition_emulated
from functions.models import SYNTHETIC, ModelError, minilm_dir, resolve_model
from functions.partition_layout import (
    FORMAT,
    TOKENIZER_FILES,
    PartitionError,
    split_layers,
    stable_seed,
    staged_into,
)
from functions.stage.bert import (
    EMBEDDING_PARAMS,
    BertConfig,
    layer_param_names,
    sha256_file,
)


def synthetic_tensor_fn(cfg: BertConfig, seed: int) -> Callable[[str], torch.Tensor]:
    """Seeded weights, N(0, 0.02) like BERT's initializer; LayerNorm 1/0, biases 0.

    Each tensor has its own generator seeded from (seed, name), so a stage's
    weights do not depend on which other stages are generated.
    """
    shapes = _shapes(cfg)

    def make(name: str) -> torch.Tensor:
        shape = shapes[name]
        if name.endswith("LayerNorm.weight"):
            return torch.ones(shape)
        if name.endswith(".bias"):
            return torch.zeros(shape)
        g = torch.Generator().manual_seed(stable_seed(seed, name))
        return torch.randn(shape, generator=g) * 0.02

    return make


def _shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    h, i = cfg.hidden_size, cfg.intermediate_size
    s: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, h),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
    }
    for layer in range(cfg.num_hidden_layers):
        for n in layer_param_names(layer):
            suffix = n.split(f"encoder.layer.{layer}.")[1]
            if suffix.startswith("intermediate.dense.weight"):
                s[n] = (i, h)
            elif suffix.startswith("intermediate.dense.bias"):
                s[n] = (i,)
            elif suffix.startswith("output.dense.weight"):
                s[n] = (h, i)
            elif suffix.endswith("weight") and "LayerNorm" not in suffix:
                s[n] = (h, h)
            else:
                s[n] = (h,)
    return s


def partition(out: str | Path, stages: int, model: str | None = None,
              synthetic: str | None = None, seed: int = 0, split: list[int] | None = None,
              force: bool = False, max_seq_length: int = 256,
              progress: Callable[[str], None] | None = None,
              accelerator: str | None = None) -> dict[str, Any]:
    """Write a partition to ``out`` and return its manifest."""
    say = progress or (lambda _m: None)
    out = Path(out).expanduser().resolve()
    if (model is None) == (synthetic is None):
        raise PartitionError("give exactly one of --model or --synthetic")
    if out.exists() and not force:
        raise PartitionError(f"{out} already exists (use --force to replace it)")
    if is_emulated(model):  # no weights: an emulated accelerator (emulated_partition.py)
        return partition_emulated(out, stages, str(model), seed, split, force, say,
                                  max_seq_length, accelerator)
    if accelerator is not None:
        raise PartitionError("--accelerator applies to emulated models (--model "
                             "emulated:bert-large) only")
    if is_decoder(model) or is_decoder(synthetic):  # seeded OPT decoders (decoder_partition.py)
        return partition_decoder(out, stages, str(model or synthetic), seed, split, force, say)
    tok_dir = minilm_dir()  # BERT uncased WordPiece vocabulary, shared by the synthetic models
    if synthetic is not None:
        src = _synthetic_source(synthetic, seed, tok_dir)
    else:
        try:
            name, mdir = resolve_model(model or "")
        except ModelError as e:
            raise PartitionError(str(e)) from e
        raw = json.loads((mdir / "config.json").read_text())
        if raw.get("model_type") == "opt":
            return partition_decoder(out, stages, name, seed, split, force, say, model_dir=mdir)
        src = _encoder_source(str(model), name, mdir, raw, tok_dir)
    ranges = split_layers(src.cfg.num_hidden_layers, stages, split)
    with staged_into(out) as tmp:
        manifest = _write(tmp, src.name, src.source, src.cfg, ranges, src.get, src.tok_dir,
                          max_seq_length, say)
    return manifest


@dataclass(frozen=True)
class _Source:
    """Where an encoder's tensors come from, and what the manifest says about it."""

    name: str
    source: str
    cfg: BertConfig
    get: Callable[[str], torch.Tensor]
    tok_dir: Path


def _synthetic_source(synthetic: str, seed: int, tok_dir: Path) -> _Source:
    if synthetic not in SYNTHETIC:
        raise PartitionError(f"unknown synthetic model {synthetic!r}; "
                             f"choose one of {', '.join(SYNTHETIC)}")
    cfg = SYNTHETIC[synthetic]
    return _Source(f"synthetic-{synthetic}", f"synthetic:{synthetic}:seed={seed}", cfg,
                   synthetic_tensor_fn(cfg, seed), tok_dir)


def _encoder_source(model: str, name: str, mdir: Path, raw: dict[str, Any],
                    tok_dir: Path) -> _Source:
    """A BERT-family checkpoint (``model.safetensors``, with or without the ``bert.``
    prefix); its own tokenizer when it ships one."""
    if raw.get("model_type") != "bert":
        raise PartitionError(f"{model}: model_type {raw.get('model_type')!r} is not a "
                             "BERT-family encoder")
    cfg = BertConfig.from_dict(raw)
    if (mdir / "tokenizer.json").is_file():
        tok_dir = mdir
    from safetensors import safe_open

    handle = safe_open(str(mdir / "model.safetensors"), "pt")
    names = set(handle.keys())  # safe_open has no __contains__
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in names else ""

    def get(n: str) -> torch.Tensor:
        return handle.get_tensor(prefix + n).contiguous()

    return _Source(name, str(mdir), cfg, get, tok_dir)


def _write(tmp: Path, name: str, source: str, cfg: BertConfig, ranges: list[tuple[int, int]],
           get: Callable[[str], torch.Tensor], tok_dir: Path, max_seq_length: int,
           say: Callable[[str], None]) -> dict[str, Any]:
    from safetensors.torch import save_file

    (tmp / "tokenizer").mkdir()
    for f in TOKENIZER_FILES:
        if (tok_dir / f).is_file():
            shutil.copy2(tok_dir / f, tmp / "tokenizer" / f)
    if not (tmp / "tokenizer" / "tokenizer.json").is_file():
        raise PartitionError(f"{tok_dir} has no tokenizer.json")
    entries = []
    n = len(ranges)
    for k, (a, b) in enumerate(ranges):
        names = (EMBEDDING_PARAMS if k == 0 else []) + [
            p for i in range(a, b) for p in layer_param_names(i)]
        tensors = {p: get(p).to(torch.float32) for p in names}
        fname = f"stage-{k}.safetensors"
        save_file(tensors, str(tmp / fname), metadata={
            "model": name, "stage": str(k), "layers": f"{a}-{b}", "format": FORMAT})
        params = sum(t.numel() for t in tensors.values())
        entries.append({
            "index": k, "file": fname, "layers": [a, b], "embeddings": k == 0,
            "tokenizer": k == 0, "pooling": "mean+l2norm" if k == n - 1 else None,
            "parameters": params, "parameter_bytes": sum(t.numel() * t.element_size()
                                                         for t in tensors.values()),
            "file_bytes": (tmp / fname).stat().st_size,
            "sha256": sha256_file(tmp / fname), "dtype": "float32",
        })
        del tensors
        say(f"stage {k}: layers {a}..{b - 1}, {params / 1e6:.1f}M parameters")
    manifest = {
        "format": FORMAT, "model": name, "source": source, "architecture": "bert",
        "config": cfg.to_dict(), "num_stages": n, "num_layers": cfg.num_hidden_layers,
        "dtype": "float32", "pooling": "mean+l2norm", "max_seq_length": max_seq_length,
        "tokenizer": "tokenizer/tokenizer.json", "stages": entries,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
