"""A spawn request as the agent accepts it: validated, because it names code to run.

The socket's file mode decides who may call; this decides what a call may
say: a function name that is safe in file names, absolute paths, string env.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.manifest import MANIFEST, has_manifest, read_manifest_cached

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PER_REPLICA_ENV = frozenset({"HOSTNAME", "QUART_LISTEN_FD"})


@dataclass(frozen=True)
class ReplicaRequest:
    """What the provider asks for, validated: it arrives as JSON over the agent's socket."""

    function: str
    index: int
    handler_dir: Path
    template_dir: Path
    workdir: Path
    env: dict[str, str]
    log_path: Path
    max_inflight: int = 8

    @classmethod
    def from_json(cls, d: Any) -> ReplicaRequest:
        if not isinstance(d, dict):
            raise ValueError("replica must be an object")
        fn = d.get("function")
        if not isinstance(fn, str) or not NAME_RE.match(fn):
            raise ValueError(f"invalid function name {fn!r}: lowercase letters, digits and '-'")
        idx, mi = d.get("index", 0), d.get("max_inflight", 8)
        for name, v, hi in (("index", idx, 10**6), ("max_inflight", mi, 10**5)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise ValueError(f"{name} must be an integer in [0, {hi}]")
        env = d.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in env.items()):
            raise ValueError("env must map strings to strings")
        paths = {}
        for name in ("handler_dir", "template_dir", "workdir", "log_path"):
            v = d.get(name)
            if not isinstance(v, str) or not os.path.isabs(v) or "\0" in v:
                raise ValueError(f"{name} must be an absolute path")
            paths[name] = Path(v)
        if not (paths["template_dir"] / "index.py").is_file():
            raise ValueError(f"template_dir {paths['template_dir']} has no index.py")
        return cls(fn, idx, env=dict(env), max_inflight=max(1, mi), **paths)

    def config_key(self) -> str:
        """Same key, same zygote: per-replica variables (set in the child) are left out."""
        env = sorted((k, v) for k, v in self.env.items() if k not in PER_REPLICA_ENV)
        doc = json.dumps([str(self.handler_dir), str(self.template_dir), str(self.workdir), env,
                          self.max_inflight])
        return hashlib.sha256(doc.encode()).hexdigest()[:12]

    def stage(self) -> tuple[Path, int, str | None] | None:
        """(partition dir, stage, model) when the function is a model stage with weights to
        cache, else None (no model, or a weightless stage such as an emulated one)."""
        md = self.env.get("QUART_MODEL_DIR")
        if not md:
            return None
        origin = (self.workdir / md).resolve()
        if not has_manifest(origin):
            raise ValueError(f"{self.function}: QUART_MODEL_DIR={md} holds no partition "
                             f"(no {origin / MANIFEST})")
        try:
            idx = int(self.env.get("QUART_STAGE") or 0)
        except ValueError:
            raise ValueError(f"QUART_STAGE={self.env['QUART_STAGE']!r} is not an integer") from None
        if _weightless(origin, idx):
            return None
        return origin, idx, self.env.get("QUART_MODEL") or None


def _weightless(model_dir: Path, idx: int) -> bool:
    """The manifest says stage ``idx`` has no weight file (``"file": null``: an emulated
    accelerator).  Anything unreadable is left to the cache, which reports it."""
    try:
        info = read_manifest_cached(model_dir)["stages"][idx]
        return isinstance(info, dict) and info.get("file") is None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False
