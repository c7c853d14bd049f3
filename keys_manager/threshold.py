"""The memory threshold (seed 001's ``memory_threshold`` knob) as bytes.

Apart from the segment code so that what only reads configuration (``quart-faas down``,
the provider's node table, keys_manager's config) does not import torch: that import
alone costs a second of every CLI call.
"""
from __future__ import annotations

import os
import re

_UNITS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QTY_RE = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kKMGT]i?)?B?$")


def parse_threshold(value: str, total_memory_bytes: int) -> int:
    """Bytes from "300000000", "512Mi", "2G", "65%" or a fraction "0.65" of node memory.

    A bare number with a decimal point is a fraction because seed 001's
    ``memory_threshold`` knob is a fraction (0.65); a bare integer is bytes.
    """
    s = str(value).strip()
    if s.endswith("%"):
        frac = _number(s[:-1], value) / 100.0
        return _fraction(frac, total_memory_bytes, value)
    m = _QTY_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"invalid memory threshold {value!r}: use bytes (300000000, 512Mi, 2G) "
                         "or a fraction of node memory (0.65, 65%)")
    num, unit = m["num"], m["unit"] or ""
    if unit == "" and "." in num:
        return _fraction(float(num), total_memory_bytes, value)
    if unit == "K":
        unit = "k"
    n = int(float(num) * _UNITS[unit]) if "." in num else int(num) * _UNITS[unit]
    if n <= 0:
        raise ValueError(f"memory threshold {value!r} must be > 0")
    return n


def _number(s: str, orig: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"invalid memory threshold {orig!r}") from None


def _fraction(frac: float, total: int, orig: str) -> int:
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"memory threshold fraction {orig!r} must be in (0, 1]")
    if total <= 0:
        raise ValueError("total memory must be > 0 to use a fractional threshold")
    return int(frac * total)


def node_memory_bytes() -> int:
    """Physical memory of this node (what a fractional threshold is a fraction of)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
