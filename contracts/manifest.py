"""The partition manifest: what ``quart-faas partition`` writes beside the stage files.

``OUT/manifest.json`` names the model, its config and, per stage, the layer
range, the weights file, its size and sha256.  The partitioner writes it;
keys_manager's cache, the provider's simulated nodes, ``quart-faas up`` and
the benchmarks read it.  The stage handler folder keeps its own three-line
reader (``functions/stage/bert.py``): it ships alone into a function image.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def has_manifest(model_dir: str | Path) -> bool:
    return (Path(model_dir) / MANIFEST).is_file()


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `quart-faas partition` first")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest
