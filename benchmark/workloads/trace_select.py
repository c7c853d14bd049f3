"""Choosing which trace functions to replay, and under which target names.

Shared by the 2019 (per-minute) and 2021 (per-invocation) Azure replays so
that ``top_n``, ``minute_range``, ``time_scale`` and ``target_names`` mean the
same thing for both: functions ranked by volume in the window (ties in file
order), minute ranges 0-based and half-open, names from a list (busiest
first), a mapping keyed ``"app/function"`` or by the bare function hash, or
``"<app[:8]>-<function[:8]>"`` by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["TargetNames", "bad", "index_targets", "positive_scale", "select", "sha256_file",
           "window"]

TargetNames = Mapping[str, str] | Sequence[str] | None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def window(minute_range: tuple[int, int] | None, n_minutes: int) -> tuple[int, int]:
    if minute_range is None:
        return 0, n_minutes
    try:
        a, b = (int(x) for x in minute_range)
    except (TypeError, ValueError):
        raise ValueError(f"minute_range must be (start, stop), got {minute_range!r}") from None
    if not 0 <= a < b <= n_minutes:
        raise ValueError(f"minute_range {minute_range!r} must satisfy 0 <= start < stop <= "
                         f"{n_minutes} (the trace's minutes)")
    return a, b


def select(apps: Sequence[str], funcs: Sequence[str], volume: np.ndarray, top_n: int | None,
           target_names: TargetNames) -> tuple[np.ndarray, list[str]]:
    """Functions to replay (indices, by descending volume, ties in file order) and their
    target names."""
    if isinstance(target_names, str):
        raise TypeError("target_names must be a list of names or a mapping, not one string")
    keys = [f"{a}/{f}" for a, f in zip(apps, funcs, strict=True)]
    candidates = np.arange(len(keys))
    mapping: dict[int, str] = {}
    if isinstance(target_names, Mapping):
        by_key = {k: i for i, k in enumerate(keys)}
        by_func: dict[str, list[int]] = {}
        for i, f in enumerate(funcs):
            by_func.setdefault(f, []).append(i)
        for k, name in target_names.items():
            if k in by_key:
                mapping[by_key[k]] = str(name)
            elif len(by_func.get(k, [])) == 1:
                mapping[by_func[k][0]] = str(name)
            elif k in by_func:
                raise ValueError(f"function {k!r} is in several apps: key it as 'app/function'")
            else:
                raise ValueError(f"target_names has {k!r}, which is not a function of the trace")
        candidates = np.array(sorted(mapping), dtype=np.int64)
    order = candidates[np.argsort(-volume[candidates], kind="stable")]
    if top_n is not None:
        if isinstance(top_n, bool) or int(top_n) < 1:
            raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
        order = order[: int(top_n)]
    if isinstance(target_names, Mapping):
        names = [mapping[int(i)] for i in order]
    elif target_names is not None:
        names = [str(n) for n in target_names]
        if len(names) != len(order):
            raise ValueError(f"target_names lists {len(names)} names for {len(order)} selected "
                             "functions (one per function, in descending volume order)")
    else:
        names = [f"{apps[i][:8]}-{funcs[i][:8]}" for i in order]
        if len(set(names)) != len(names):
            names = [keys[i] for i in order]
    if any(not n for n in names):
        raise ValueError("target names must be non-empty")
    return order, names


def index_targets(names: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    uniq: dict[str, int] = {}
    idx = np.array([uniq.setdefault(n, len(uniq)) for n in names], dtype=np.int32)
    return tuple(uniq), idx


def positive_scale(time_scale: float) -> float:
    s = float(time_scale)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
    return s


def bad(path: Path, line: int, msg: str) -> ValueError:
    return ValueError(f"{path}: line {line}: {msg}")

