"""A workload as data: the planned send times every compared system replays.

A comparison is only fair if every system sees the *same* requests at the
same instants, so a workload is generated once, saved, hashed, and loaded by
the simulator and by the live harness alike; the printed sha256 is the proof
that two runs used one workload.  The file is a canonical byte string (a
magic line, one sorted-key JSON header line, then little-endian float64 send
times and int32 target indices): the same arrivals always give the same
bytes, with no timestamps or host names in them.  It is never unpickled.

Requests are open-loop: a time here is when a request is *sent*, whatever
the system did with earlier ones, so queueing delay cannot hide behind a
slowed-down client ("coordinated omission", G. Tene, *How NOT to Measure
Latency*, 2015).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "MAGIC", "Arrivals", "merge"]

MAGIC = b"QUART-ARRIVALS\n"
FORMAT_VERSION = 1
_TIME_DTYPE = np.dtype("<f8")
_TARGET_DTYPE = np.dtype("<i4")
_META_DEFAULTS: dict[str, Any] = {"name": "arrivals", "kind": "custom", "seed": None,
                                  "parameters": {}}


def _canonical_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip of ``meta``: tuples become lists now, not after a save/load."""
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    merged = {**_META_DEFAULTS, **meta}
    try:
        out: dict[str, Any] = json.loads(json.dumps(merged, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-able (finite numbers, str keys): {e}") from None
    d = out.get("duration_s")
    if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or d <= 0:
        raise ValueError(f"meta['duration_s'] must be a positive number, got {d!r}")
    out["duration_s"] = float(d)
    return out


def _cv(times: np.ndarray) -> float | None:
    """Empirical coefficient of variation of the inter-arrival gaps (None below 3 arrivals)."""
    if len(times) < 3:
        return None
    gaps = np.diff(times)
    mean = float(gaps.mean())
    return float(gaps.std() / mean) if mean > 0 else None


@dataclass(frozen=True, eq=False)
class Arrivals:
    """Open-loop send times (s from the run's start) and the target each request goes to.

    Arrays are copied, typed (float64 / int32) and made read-only, so a saved
    workload cannot drift from its hash after the fact.  Equality compares
    contents; instances are not hashable (use :meth:`sha256`).
    """

    times_s: np.ndarray
    target: np.ndarray
    targets: tuple[str, ...]
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        times = np.array(self.times_s, dtype=np.float64, copy=True)
        target = np.array(self.target, copy=True)
        targets = tuple(self.targets)
        meta = _canonical_meta(self.meta)
        if times.ndim != 1 or target.ndim != 1:
            raise ValueError("times_s and target must be 1-D arrays")
        if len(times) != len(target):
            raise ValueError(f"times_s has {len(times)} entries but target has {len(target)}")
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError("targets must be a non-empty tuple of non-empty strings")
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets must be unique, got {list(targets)}")
        if len(target) and not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"target must hold integer indices, got dtype {target.dtype}")
        target = target.astype(np.int32)
        if len(times):
            if not np.all(np.isfinite(times)):
                raise ValueError("times_s has a NaN or infinite entry")
            if times[0] < 0:
                raise ValueError(f"times_s must be >= 0, first is {times[0]}")
            if np.any(np.diff(times) < 0):
                i = int(np.argmax(np.diff(times) < 0))
                raise ValueError(f"times_s must be sorted ascending: entry {i + 1} "
                                 f"({times[i + 1]}) < entry {i} ({times[i]})")
            if times[-1] > meta["duration_s"]:
                raise ValueError(f"last arrival {times[-1]} s is after duration_s "
                                 f"{meta['duration_s']} s")
            lo, hi = int(target.min()), int(target.max())
            if lo < 0 or hi >= len(targets):
                bad = lo if lo < 0 else hi
                raise ValueError(f"target index {bad} is out of range for {len(targets)} "
                                 "targets")
        times.flags.writeable = False
        target.flags.writeable = False
        for name, value in (("times_s", times), ("target", target), ("targets", targets),
                            ("meta", meta)):
            object.__setattr__(self, name, value)

    # --- views ---------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        return float(self.meta["duration_s"])

    def __len__(self) -> int:
        return len(self.times_s)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arrivals):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def for_target(self, name: str) -> np.ndarray:
        """Send times of the requests to one target (a read-only view-sized copy)."""
        try:
            i = self.targets.index(name)
        except ValueError:
            raise KeyError(f"unknown target {name!r}; this workload has "
                           f"{list(self.targets)[:10]}{' ...' if len(self.targets) > 10 else ''}"
                           ) from None
        return self.times_s[self.target == i]

    def truncate(self, duration_s: float) -> Arrivals:
        """The first ``duration_s`` seconds (live runs replay a shorter prefix)."""
        if not duration_s > 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        keep = self.times_s < duration_s
        meta = {**self.meta, "duration_s": min(float(duration_s), self.duration_s),
                "truncated_from_s": self.duration_s}
        return Arrivals(self.times_s[keep], self.target[keep], self.targets, meta)

    def summary(self) -> dict[str, Any]:
        """Counts, mean rate and empirical inter-arrival CV, overall and per target."""
        dur, k = self.duration_s, len(self.targets)
        counts = np.bincount(self.target, minlength=k)
        # per-target gap moments in one pass: group by target (stable keeps time order)
        order = np.argsort(self.target, kind="stable")
        ts, tg = self.times_s[order], self.target[order]
        same = tg[1:] == tg[:-1]
        gaps, who = np.diff(ts)[same], tg[1:][same]
        m = np.bincount(who, minlength=k).astype(np.float64)
        s1 = np.bincount(who, weights=gaps, minlength=k)
        s2 = np.bincount(who, weights=gaps * gaps, minlength=k)
        per = {}
        for i, name in enumerate(self.targets):
            cv = None
            if m[i] >= 2 and s1[i] > 0:
                mean = s1[i] / m[i]
                cv = float(np.sqrt(max(s2[i] / m[i] - mean * mean, 0.0)) / mean)
            per[name] = {"n": int(counts[i]), "rate_per_s": int(counts[i]) / dur, "cv": cv}
        return {"name": self.meta["name"], "kind": self.meta["kind"], "seed": self.meta["seed"],
                "duration_s": dur, "n": len(self), "rate_per_s": len(self) / dur,
                "cv": _cv(self.times_s), "targets": per}

    # --- bytes, files, hash --------------------------------------------------------------

    def to_bytes(self) -> bytes:
        header = {"format": "quart-arrivals", "version": FORMAT_VERSION, "n": len(self),
                  "targets": list(self.targets), "meta": self.meta,
                  "times_dtype": _TIME_DTYPE.str, "target_dtype": _TARGET_DTYPE.str}
        head = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return b"".join([MAGIC, head.encode(), b"\n",
                         self.times_s.astype(_TIME_DTYPE).tobytes(),
                         self.target.astype(_TARGET_DTYPE).tobytes()])

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> str:
        """Write the workload; returns the sha256 of the bytes written."""
        data = self.to_bytes()
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(p)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Arrivals:
        if not data.startswith(MAGIC):
            raise ValueError(f"{source}: not an arrivals file (it does not start with "
                             f"{MAGIC.strip().decode()!r})")
        end = data.find(b"\n", len(MAGIC))
        if end < 0:
            raise ValueError(f"{source}: header line is not terminated")
        try:
            header = json.loads(data[len(MAGIC):end])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{source}: header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise ValueError(f"{source}: header must be a JSON object")  # noqa: TRY004 - a bad file
        for key in ("version", "n", "targets", "meta", "times_dtype", "target_dtype"):
            if key not in header:
                raise ValueError(f"{source}: header has no {key!r} field")
        if header["version"] != FORMAT_VERSION:
            raise ValueError(f"{source}: format version {header['version']!r} is not supported "
                             f"(this reader knows version {FORMAT_VERSION})")
        if header["times_dtype"] != _TIME_DTYPE.str or header["target_dtype"] != _TARGET_DTYPE.str:
            raise ValueError(f"{source}: unexpected dtypes {header['times_dtype']!r}/"
                             f"{header['target_dtype']!r}")
        n = header["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{source}: header field 'n' must be a non-negative integer")
        if not isinstance(header["targets"], list):
            raise ValueError(  # noqa: TRY004 - load() answers every bad file with ValueError
                f"{source}: header field 'targets' must be a list")
        payload = memoryview(data)[end + 1:]
        want = n * (_TIME_DTYPE.itemsize + _TARGET_DTYPE.itemsize)
        if len(payload) != want:
            raise ValueError(f"{source}: payload is {len(payload)} bytes but n={n} needs {want} "
                             "(file truncated or padded)")
        split = n * _TIME_DTYPE.itemsize
        times = np.frombuffer(payload[:split], dtype=_TIME_DTYPE)
        target = np.frombuffer(payload[split:], dtype=_TARGET_DTYPE)
        try:
            return cls(times, target, tuple(header["targets"]), header["meta"])
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Arrivals:
        """Read and validate a file written by :meth:`save`; ValueError says what is wrong."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ValueError(f"{p}: cannot read arrivals file: {e.strerror or e}") from None
        return cls.from_bytes(data, source=str(p))


def single_target(times: np.ndarray, target: str, meta: dict[str, Any]) -> Arrivals:
    """A one-target workload (all requests to ``target``)."""
    return Arrivals(times, np.zeros(len(times), dtype=np.int32), (target,), meta)


def merge(*arrivals: Arrivals | Iterable[Arrivals], name: str | None = None) -> Arrivals:
    """Several workloads in one run; targets with the same name become one target.

    Ties in time keep the order of the arguments (stable sort), so merging is
    deterministic; the duration is the longest input's.
    """
    parts: list[Arrivals] = []
    for a in arrivals:
        parts.extend([a] if isinstance(a, Arrivals) else list(a))
    if not parts:
        raise ValueError("merge needs at least one Arrivals")
    for a in parts:
        if not isinstance(a, Arrivals):
            raise TypeError(f"merge takes Arrivals, got {type(a).__name__}")
    names: list[str] = []
    index: dict[str, int] = {}
    for a in parts:
        for t in a.targets:
            if t not in index:
                index[t] = len(names)
                names.append(t)
    times = np.concatenate([a.times_s for a in parts])
    target = np.concatenate([np.asarray([index[t] for t in a.targets], dtype=np.int32)[a.target]
                             for a in parts])
    order = np.argsort(times, kind="stable")
    meta = {"name": name or "+".join(a.meta["name"] for a in parts), "kind": "merge",
            "seed": [a.meta["seed"] for a in parts],
            "parameters": {"parts": [a.meta for a in parts]},
            "duration_s": max(a.duration_s for a in parts)}
    return Arrivals(times[order], target[order], tuple(names), meta)
