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


_parsed: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def read_manifest_cached(model_dir: str | Path) -> dict[str, Any]:
    """``read_manifest``, parsed again only when the file changed (inode, size or mtime):
    keys_manager reads it twice per spawn (the request's stage, the cache's ``ensure``),
    which is on the scale-up path.  The answer is shared by every caller: never change it."""
    path = Path(model_dir) / MANIFEST
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run `quart-faas partition` first") from None
    sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _parsed.get(path)
    if hit is not None and hit[0] == sig:
        return hit[1]
    manifest: dict[str, Any] = json.loads(path.read_text())
    _parsed[path] = (sig, manifest)
    return manifest
