"""How large a body a pipeline stage can accept, from what the stage itself accepts.

The gateway refuses a larger body with a 413 before it buffers it (issue 18, finding 5:
the function endpoint took 64 MiB bodies though the largest valid stage-0 request is a few
MB).  The sizes follow the stage handler's own checks (``functions/stage``):

- stage 0 takes JSON ``{"inputs": [text, ...]}``: at most ``QUART_MAX_INPUTS`` texts (64) of
  ``QUART_MAX_INPUT_CHARS`` characters (10000) each; a decoder's stage 0 one prompt of as many.
  A character costs at most 12 bytes of JSON (one outside the BMP, escaped as a surrogate
  pair ``\\ud83d\\ude00``, which is what ``json.dumps`` sends by default).
- a later stage takes the activations of the stage before (``codec.py``): float32
  ``[batch, seq, hidden]`` and an int64 ``[batch, seq]`` mask, batch at most
  ``QUART_MAX_INPUTS`` (1 for a decoder's step), seq at most the manifest's
  ``max_seq_length``, hidden the manifest's ``config.hidden_size``.

A function's own ``QUART_MAX_BODY_BYTES`` lowers the limit further.  A function that is not a
partitioned stage (no manifest) has no limit here: the gateway's global one applies.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_BYTES_PER_CHAR = 12
JSON_FRAME = 4096  # braces, key, whitespace around the texts
SAFETENSORS_FRAME = 64 << 10  # the safetensors header and its metadata


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return max(0, int((env.get(name) or "").strip() or default))
    except ValueError:
        return default  # the stage refuses to start on it; the gateway need not


def stage_body_limit(env: Mapping[str, str], manifest: Mapping[str, Any]) -> int:
    """The largest body a stage configured by ``env`` and partitioned as ``manifest`` can
    accept (bytes)."""
    stage = _int(env, "QUART_STAGE", 0)
    inputs = _int(env, "QUART_MAX_INPUTS", 64)
    chars = _int(env, "QUART_MAX_INPUT_CHARS", 10000)
    decoder = manifest.get("architecture") == "opt"
    if stage == 0:
        texts = 1 if decoder else inputs
        limit = texts * (chars * MAX_BYTES_PER_CHAR + 4) + JSON_FRAME
    else:
        batch = 1 if decoder else inputs
        seq = int(manifest.get("max_seq_length") or 256)
        hidden = int((manifest.get("config") or {}).get("hidden_size") or 0)
        limit = batch * seq * (hidden * 4 + 8) + SAFETENSORS_FRAME
    own = _int(env, "QUART_MAX_BODY_BYTES", 0)
    return min(limit, own) if own else limit


def manifest_of(env: Mapping[str, str], workdir: str | Path) -> dict[str, Any] | None:
    """The partition manifest a replica started with ``env`` in ``workdir`` reads, or None
    when it has none (not a partitioned stage) or it cannot be read."""
    model_dir = (env.get("QUART_MODEL_DIR") or "").strip()
    if not model_dir:
        return None
    path = Path(workdir) / model_dir / "manifest.json"  # an absolute model_dir wins
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def function_body_limit(env: Mapping[str, str], workdir: str | Path) -> int | None:
    """A function's body limit, or None when it is not a partitioned stage."""
    manifest = manifest_of(env, workdir)
    return None if manifest is None else stage_body_limit(env, manifest)
