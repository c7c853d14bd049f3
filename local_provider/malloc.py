"""Giving freed body buffers back to the system (glibc), so that RSS returns after bursts.

Why: glibc serves a freed large block's size from the heap from then on (its mmap threshold
rises to the largest block freed, up to 32 MiB), and a heap or a thread's arena keeps its
top pages.  A gateway that buffered a few 20 MB bodies at once then stayed that large (the
soak's gateway grew 29.8 % in 30 minutes).  A fixed mmap threshold puts every body-sized
block in its own mapping, returned on free; ``trim`` returns what the heaps still keep.
Elsewhere than glibc both are no-ops.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger("local_provider.malloc")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 10  # above it a block is its own mapping (fixed: no dynamic raise)
TRIM_THRESHOLD = 1 << 20

_libc: ctypes.CDLL | None = None
_lock = threading.Lock()
_last_trim = 0.0


def configure() -> bool:
    """Fix the mmap and trim thresholds once per process; False where not glibc."""
    global _libc
    if _libc is not None:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        libc.malloc_trim  # noqa: B018 - glibc has it; others do not
    except (OSError, AttributeError):
        return False
    _libc = libc
    if not ok:
        log.warning("mallopt refused the thresholds: freed bodies may stay resident")
    return True


def trim(min_interval_s: float = 1.0) -> None:
    """``malloc_trim(0)``, at most once per ``min_interval_s`` (it walks every arena)."""
    global _last_trim
    if _libc is None:
        return
    with _lock:
        now = time.monotonic()
        if now - _last_trim < min_interval_s:
            return
        _last_trim = now
    _libc.malloc_trim(0)
