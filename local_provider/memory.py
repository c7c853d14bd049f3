"""Keeping the gateway's RSS flat: freed body buffers go back to the system (glibc), and
the request threads in use are the ones already warm.

Why: glibc serves a freed large block's size from the heap from then on (its mmap threshold
rises to the largest block freed, up to 32 MiB), and a heap or a thread's arena keeps its
top pages.  A gateway that buffered a few 20 MB bodies at once then stayed that large (the
issue's 143 -> 460 MB).  A fixed mmap threshold puts every body-sized
block in its own mapping, returned on free; ``trim`` returns what the heaps still keep;
at most two arenas (not one per busy thread).  Elsewhere than glibc these are no-ops.

Threads: waitress wakes its idle request threads in FIFO order (``threading.Condition``), so
at 4 req/s every one of its hundreds of threads (``QUART_SERVER_THREADS``, above the queue
size) serves a request in turn and each keeps some 20-30 KB of heap it touched: the soak's
gateway grew ~28 % in 5 minutes that way, not by a leak (tracemalloc: Python objects flat;
with 40 threads RSS stopped growing after 600 requests).  ``hot_threads_first`` makes the
wake-up LIFO: the thread idle the shortest time takes the next task, so only as many
threads as the load keeps busy are ever touched.  Tasks still run in arrival order.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger("local_provider.memory")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENA_MAX = 2  # hundreds of waitress threads would each fragment an arena of their own
MMAP_THRESHOLD = 256 << 10  # above it a block is its own mapping (fixed: no dynamic raise)
TRIM_THRESHOLD = 1 << 20

class LifoCondition(threading.Condition):
    """``notify`` wakes the waiter that started waiting last (threading's wakes the first)."""

    def notify(self, n: int = 1) -> None:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters  # type: ignore[attr-defined]
        while waiters and n > 0:
            waiter = waiters.pop()
            try:
                waiter.release()
            except RuntimeError:  # released by an interrupted notify before (gh-92530)
                continue
            n -= 1


def hot_threads_first(dispatcher: object) -> bool:
    """Make a waitress task dispatcher wake its most recently idle thread; False when it
    has no ``queue_cv`` Condition to change (another waitress)."""
    cv = getattr(dispatcher, "queue_cv", None)
    if type(cv) is not threading.Condition:
        return False
    cv.__class__ = LifoCondition  # in place: its threads already wait on this object
    return True


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
        ok = all(libc.mallopt(k, v) for k, v in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                 (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                                 (M_ARENA_MAX, ARENA_MAX)))
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
