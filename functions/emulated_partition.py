"""``quart-faas partition --model emulated:bert-large --stages 4 --accelerator t4-fp32``.

An emulated partition has the layout of a real one (``manifest.json``, stage 0's
``tokenizer/``) and no weight files: each stage entry says which layers it stands for
and how many parameters the real stage would hold (``file: null``, ``file_bytes: 0``,
so keys_manager has nothing to cache).  ``architecture: "emulated"`` makes the stage
handler an ``EmulatedServer`` (``functions/stage/emulated.py``).  The manifest carries
the calibration it was made from (``functions/emulated_calibration.json``: the fit, the
accelerator profiles, where each number comes from, the file's sha256), so a stage
needs nothing but its partition and a run is reproducible from it alone.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from functions.models import SYNTHETIC, minilm_dir
from functions.partition_layout import (
    FORMAT,
    TOKENIZER_FILES,
    PartitionError,
    split_layers,
    staged_into,
)
from functions.stage.bert import MANIFEST, BertConfig
from functions.stage.emulated_profile import (
    CALIBRATION_FILE,
    DEFAULT_ACCELERATOR,
    ServiceModel,
    layer_params,
)

PREFIXES = ("emulated:", "emulated-")


def is_emulated(name: str | None) -> bool:
    """``emulated:bert-large`` (or ``emulated-bert-large``, the model name it produces)."""
    return (name or "").strip().lower().startswith(PREFIXES)


def load_calibration(path: Path = CALIBRATION_FILE) -> tuple[dict[str, Any], str]:
    try:
        raw = path.read_bytes()
        return json.loads(raw), hashlib.sha256(raw).hexdigest()
    except (OSError, ValueError) as e:
        raise PartitionError(f"cannot read the calibration {path}: {e}; regenerate it with "
                             "`python -m functions.emulated_calibrate`") from e


def partition_emulated(out: Path, stages: int, name: str, seed: int = 0,
                       split: list[int] | None = None, force: bool = False,
                       say: Callable[[str], None] = lambda _m: None, max_seq_length: int = 256,
                       accelerator: str | None = None,
                       calibration: Path = CALIBRATION_FILE) -> dict[str, Any]:
    base = name.strip().lower()[len("emulated:"):]
    cal, sha = load_calibration(calibration)
    if base != cal.get("model"):
        raise PartitionError(f"the calibration {calibration.name} covers {cal.get('model')!r}, "
                             f"not {base!r}: use emulated:{cal.get('model')} or recalibrate")
    profiles = cal["accelerators"]
    acc = accelerator or DEFAULT_ACCELERATOR
    if acc not in profiles:
        raise PartitionError(f"unknown --accelerator {acc!r}; choose one of "
                             f"{', '.join(sorted(profiles))}")
    cfg = SYNTHETIC[base]
    ranges = split_layers(cfg.num_hidden_layers, stages, split)
    if out.exists() and not force:
        raise PartitionError(f"{out} already exists (use --force to replace it)")
    with staged_into(out) as tmp:
        manifest = _manifest(f"emulated-{base}", name, cfg, ranges, cal, sha, acc, seed,
                             max_seq_length)
        _write(tmp, manifest)
    for s in manifest["stages"]:
        a, b = s["layers"]
        say(f"stage {s['index']}: layers {a}..{b - 1} emulated on {acc}, "
            f"{s['service_ms'][acc]['b1_t128']:.2f} ms at batch 1 x 128 tokens (cv {s['cv']})")
    return manifest


def _manifest(model: str, source: str, cfg: BertConfig, ranges: list[tuple[int, int]],
              cal: dict[str, Any], sha: str, acc: str, seed: int, max_seq: int
              ) -> dict[str, Any]:
    fit = cal["fit"]
    gen = cal["generated"]
    cv_by_stage = fit.get("cv_by_stage", {}) if gen.get("stages") == len(ranges) else {}
    emulation = {
        "accelerator": acc, "seed": seed,
        "fit": {"per_layer_table": fit["per_layer_table"],
                "gflops_effective": fit["gflops_effective"], "cv": fit["cv"],
                "use": fit["per_layer_table_use"]},
        "accelerators": cal["accelerators"],
        "calibration": {"file": "functions/emulated_calibration.json", "sha256": sha,
                        "date": gen["date"], "command": gen["command"],
                        "cpu": gen["machine"]["cpu"],
                        "cpu_gemm_gflops": cal["cpu_gemm"]["gflops_median"]},
    }
    emb = cfg.vocab_size * cfg.hidden_size + (cfg.max_position_embeddings
                                              + cfg.type_vocab_size + 2) * cfg.hidden_size
    n = len(ranges)
    manifest: dict[str, Any] = {
        "format": FORMAT, "model": model, "source": source, "architecture": "emulated",
        "config": cfg.to_dict(), "num_stages": n, "num_layers": cfg.num_hidden_layers,
        "dtype": "float32", "pooling": "mean+l2norm", "max_seq_length": max_seq,
        "tokenizer": "tokenizer/tokenizer.json", "emulation": emulation, "stages": []}
    for k, (a, b) in enumerate(ranges):
        params = (b - a) * layer_params(cfg) + (emb if k == 0 else 0)
        cv = float(cv_by_stage.get(str(k), fit["cv"]))
        manifest["stages"].append({
            "index": k, "file": None, "layers": [a, b], "embeddings": k == 0,
            "tokenizer": k == 0, "pooling": "mean+l2norm" if k == n - 1 else None,
            "parameters": params, "parameter_bytes": params * 4, "file_bytes": 0,
            "sha256": None, "dtype": "float32", "cv": cv})
    for k, s in enumerate(manifest["stages"]):  # what each profile makes of it, for people
        s["service_ms"] = {p: {f"b{b}_t{t}": round(ServiceModel.from_manifest(
            manifest, k, cfg, p).mean_s(cfg, b, t) * 1e3, 4) for b, t in ((1, 16), (1, 128),
                                                                           (8, 128))}
            for p in cal["accelerators"]}
    return manifest


def _write(tmp: Path, manifest: dict[str, Any]) -> None:
    tok = minilm_dir()  # the BERT uncased WordPiece vocabulary, as the synthetic models use
    (tmp / "tokenizer").mkdir()
    for f in TOKENIZER_FILES:
        if (tok / f).is_file():
            shutil.copy2(tok / f, tmp / "tokenizer" / f)
    if not (tmp / "tokenizer" / "tokenizer.json").is_file():
        raise PartitionError(f"{tok} has no tokenizer.json")
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
