"""What an agent writes to carry on after a crash, and how the next agent reads it back.

``state.json`` lists the zygotes, replicas and zygote recipes of the node. A restarted agent
adopts the processes that are still alive (pid and start time, and a zygote must answer on
its socket), stops the zygotes it cannot vouch for and deletes their sockets, so nothing
leaks; the caller re-pins the stages of the replicas it adopted.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keys_manager.launch import answers
from keys_manager.procs import Proc
from keys_manager.segment import write_json_atomic

log = logging.getLogger("keys_manager.agent")


@dataclass
class NodeState:
    zygotes: dict[str, Proc] = field(default_factory=dict)
    replicas: dict[int, Proc] = field(default_factory=dict)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)


def save(path: Path, zygotes: list[Proc], replicas: list[Proc],
         recipes: dict[str, dict[str, Any]]) -> None:
    """Atomic (rename) but not fsync'ed: it describes live processes, which a machine
    crash takes with it; an fsync per spawn would cost milliseconds on the hot path."""
    write_json_atomic(path, durable=False, indent=None, obj={
        "zygotes": [z.to_json() for z in zygotes],
        "replicas": [r.to_json() for r in replicas],
        "recipes": recipes})


def restore(path: Path, zygote_dir: Path) -> NodeState:
    """Adopt what survived a crash of the previous agent; clean up the rest."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    state = NodeState()
    recipes = doc.get("recipes")
    if isinstance(recipes, dict):
        state.recipes = {f: r for f, r in recipes.items() if isinstance(r, dict)}
    keep = set()
    for d in doc.get("zygotes", []):
        z = Proc.from_json(d)
        if z.alive() and answers(z.sock):
            state.zygotes[z.function] = z
            keep.add(Path(z.sock).name)
            log.info("adopted zygote of %s (pid %d)", z.function, z.pid)
        else:
            z.terminate(2.0)
    for p in zygote_dir.glob("*.sock"):
        if p.name not in keep:
            p.unlink(missing_ok=True)
    for d in doc.get("replicas", []):
        r = Proc.from_json(d)
        if r.alive():
            state.replicas[r.pid] = r
    return state
