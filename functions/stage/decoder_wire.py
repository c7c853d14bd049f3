"""What decoder stages send each other, and the KV sessions a stage keeps between steps.

One generation step travels stage 0 -> 1 -> ... -> n-1 as safetensors bytes
(content type ``STEP_CONTENT_TYPE``, never pickle): one tensor,
``hidden_states`` float32 [1, t, H] for positions ``pos .. pos+t-1``, and
string metadata ``model``, ``stage`` (the producer), ``session`` (the request's
id), ``pos`` and ``final`` ("1" on a request's last step: drop the session).

Why sessions: a stage keeps the keys/values of a request's past positions
(its KV cache), so each new token costs one position per layer instead of
the whole prefix.  Nothing routes a session back to the same replica (the
OpenFaaS gateway balances freely), so a replica that does not hold the
session, or holds a different length, answers 409 with ``X-Quart-KV-Miss``;
the stage before it then resends its whole output history from ``pos = 0``
and the replica rebuilds.  Correctness never depends on affinity; speed does.
Sessions are bounded by count, bytes and idle time (LRU eviction).
"""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from .codec import PayloadError, _metadata, all_finite
from .opt import KVCache

STEP_CONTENT_TYPE = "application/vnd.quart.decoder-step+safetensors"
KV_MISS_HEADER = "X-Quart-KV-Miss"
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass
class Step:
    hidden: torch.Tensor  # [1, t, H]
    session: str
    pos: int
    final: bool


def encode_step(hidden: torch.Tensor, model: str, stage: int, session: str, pos: int,
                final: bool) -> bytes:
    return save({"hidden_states": hidden.contiguous()},
                metadata={"model": model, "stage": str(stage), "session": session,
                          "pos": str(pos), "final": "1" if final else "0"})


def decode_step(data: bytes, hidden_size: int, max_positions: int, model: str,
                expected_stage: int) -> Step:
    """Validate everything a hostile caller could get wrong; PayloadError (4xx) otherwise."""
    if not data:
        raise PayloadError("empty step payload")
    try:
        tensors = load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise PayloadError(f"malformed step payload: {e}") from e
    if set(tensors) != {"hidden_states"}:
        raise PayloadError(f"step payload must hold exactly 'hidden_states', got {sorted(tensors)}")
    h = tensors["hidden_states"]
    if h.dtype != torch.float32:
        raise PayloadError(f"hidden_states must be float32, got {h.dtype}")
    if h.ndim != 3 or h.shape[0] != 1 or h.shape[2] != hidden_size:
        raise PayloadError(f"hidden_states must have shape [1, seq, {hidden_size}], "
                           f"got {list(h.shape)}")
    if meta.get("model") != model:
        raise PayloadError(f"step comes from model {meta.get('model')!r}, this stage serves "
                           f"{model!r}", status=409)
    if meta.get("stage") != str(expected_stage):
        raise PayloadError(f"step comes from stage {meta.get('stage')}, this stage expects "
                           f"the output of stage {expected_stage}", status=409)
    session = meta.get("session", "")
    if not SESSION_RE.fullmatch(session):
        raise PayloadError("metadata 'session' must be 8..64 of [A-Za-z0-9_-]")
    try:
        pos = int(meta.get("pos", ""))
    except ValueError:
        raise PayloadError("metadata 'pos' must be an integer") from None
    t = h.shape[1]
    if pos < 0 or t < 1 or pos + t > max_positions:
        raise PayloadError(f"positions {pos}..{pos + t - 1} are outside 0..{max_positions - 1}")
    if meta.get("final") not in ("0", "1"):
        raise PayloadError("metadata 'final' must be '0' or '1'")
    if not all_finite(h):
        raise PayloadError("hidden_states contain NaN or infinity")
    return Step(h, session, pos, meta["final"] == "1")


@dataclass
class Session:
    cache: KVCache = field(default_factory=KVCache)
    history: torch.Tensor | None = None  # this stage's outputs, to resend after a miss
    used: float = 0.0

    @property
    def nbytes(self) -> int:
        h = self.history
        return self.cache.nbytes + (h.numel() * h.element_size() if h is not None else 0)


class SessionStore:
    """KV sessions of one replica: LRU, bounded by count, bytes and idle seconds."""

    def __init__(self, max_sessions: int, max_bytes: int, ttl_s: float):
        self.max_sessions, self.max_bytes, self.ttl_s = max_sessions, max_bytes, ttl_s
        self._s: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.rebuilds = self.evictions = 0

    def begin(self, session: str, pos: int) -> Session | None:
        """The session to extend at ``pos`` (a fresh one at 0), or None: a miss (-> 409)."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if pos == 0:
                self.rebuilds += session in self._s
                s = self._s[session] = Session(used=now)
                self._s.move_to_end(session)
                return s
            found = self._s.get(session)
            if found is None or found.cache.length != pos:
                self.misses += 1
                return None
            self.hits += 1
            found.used = now
            self._s.move_to_end(session)
            return found

    def end(self, session: str, final: bool) -> None:
        """After a step: drop a finished session, then keep within the bounds."""
        with self._lock:
            if final:
                self._s.pop(session, None)
            total = sum(s.nbytes for s in self._s.values())
            while self._s and (len(self._s) > self.max_sessions or total > self.max_bytes):
                _, old = self._s.popitem(last=False)
                total -= old.nbytes
                self.evictions += 1

    def _expire(self, now: float) -> None:
        for k in [k for k, s in self._s.items() if now - s.used > self.ttl_s]:
            del self._s[k]
            self.evictions += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"sessions": len(self._s), "bytes": sum(s.nbytes for s in self._s.values()),
                    "hits": self.hits, "misses": self.misses, "rebuilds": self.rebuilds,
                    "evictions": self.evictions}
