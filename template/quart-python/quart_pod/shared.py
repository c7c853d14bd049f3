"""What the zygote and its workers share: a slot table in shared memory, and an event pipe.

Why shared memory for ``busy``: a worker's in-flight count changes twice per request; a
message per change would cost the zygote a wake-up per request. Each worker writes only
its own slot (aligned 8-byte stores, atomic on every platform torch runs on) and the
zygote only reads them, at a GET or a scrape. Lifecycle events (ready, retiring) are rare
and the zygote must act on them at once, so they travel over a pipe it selects on: one
16-byte record per event, below PIPE_BUF, so writes from many workers never interleave.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct

READY, RETIRING = 1, 2
_EVENT = struct.Struct("qq")  # (pid, code)
_FIELDS = 2  # per slot: in-flight requests, requests served


class Slots:
    """``n`` slots in an anonymous MAP_SHARED mapping made before any fork."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._map = mmap.mmap(-1, max(1, n * _FIELDS) * 8)  # MAP_SHARED | MAP_ANONYMOUS
        self._a = (ctypes.c_int64 * (n * _FIELDS)).from_buffer(self._map)

    def reset(self, slot: int) -> None:
        """Zero a slot before a new worker takes it (only the zygote, before its fork)."""
        self._a[slot * _FIELDS] = 0
        self._a[slot * _FIELDS + 1] = 0

    def add_inflight(self, slot: int, delta: int) -> None:
        """Only the worker owning ``slot`` calls this, under its own lock."""
        self._a[slot * _FIELDS] += delta
        if delta < 0:
            self._a[slot * _FIELDS + 1] += 1

    def inflight(self, slot: int) -> int:
        return int(self._a[slot * _FIELDS])

    def served(self, slot: int) -> int:
        return int(self._a[slot * _FIELDS + 1])


class Events:
    """A pipe from the workers to the zygote; non-blocking on the zygote's end."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self._rest = b""

    def send(self, code: int) -> None:
        """In a worker (also from a signal handler: one write(2), no lock)."""
        os.write(self.w, _EVENT.pack(os.getpid(), code))

    def receive(self) -> list[tuple[int, int]]:
        """In the zygote: every whole record available now."""
        try:
            data = self._rest + os.read(self.r, 4096)
        except BlockingIOError:
            return []
        cut = len(data) - len(data) % _EVENT.size
        self._rest = data[cut:]
        return [_EVENT.unpack_from(data, i) for i in range(0, cut, _EVENT.size)]
