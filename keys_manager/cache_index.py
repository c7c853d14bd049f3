"""The cache's ``index.json``: what a restarted agent can vouch for.

A segment file in T1 or T2 is kept after a crash only when the index names its stage with the
same size (cache.py ``recover``); anything else is a leftover and is deleted.  The index is
written atomically after every change, so it never describes a half-made copy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from keys_manager.segment import StageKey, write_json_atomic

INDEX = "index.json"


@dataclass
class Record:
    """What the manifest says a stage's segment is, and where its origin copy lives."""

    sha256: str
    bytes: int
    origin: str


def save_index(node_dir: Path, index: dict[StageKey, Record]) -> None:
    data = {str(k): {"model": k.model, "stage": k.stage, "sha256": r.sha256,
                     "bytes": r.bytes, "origin": r.origin} for k, r in index.items()}
    write_json_atomic(node_dir / INDEX, {"version": 1, "entries": data})


def load_index(node_dir: Path) -> dict[StageKey, Record]:
    try:
        data = json.loads((node_dir / INDEX).read_text())
        out = {}
        for v in data["entries"].values():
            out[StageKey(v["model"], int(v["stage"]))] = Record(
                str(v["sha256"]), int(v["bytes"]), str(v["origin"]))
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no index or an unreadable one: every segment is unknown, re-fetched
