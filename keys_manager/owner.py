"""Who keys_manager lives for: the provider that started it (``QUART_KEYS_OWNER_PID``).

Why (issue 18, finding 1): after ``kill -9`` of the gateway/provider process, keys_manager,
its zygotes and every replica lived on as orphans, 200-500 MB each, and a new ``quart-faas
up`` started more beside them.  Replicas must outlive their provider for a moment, so that
the restarted provider (local_provider/supervisor.py restarts it) adopts them and they go on
serving; they must not outlive it for good.  So keys_manager watches its owner (pid and start
time, as procs.py: a pid alone may be reused): a provider that finds it orphaned adopts it
(``{"op": "adopt"}``); when none has within ``QUART_KEYS_ORPHAN_GRACE_S`` (30 s), keys_manager
stops its replicas and zygotes, frees T1 and exits.  Without an owner (an agent run by hand)
nothing changes: it serves until told to stop.

PR_SET_PDEATHSIG would not do: the provider starts keys_manager from whichever worker
thread launched the first replica, and the kernel sends the signal when that *thread* exits.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from keys_manager.procs import alive, start_time

ORPHAN_GRACE_S = 30.0


class Owner:
    """Thread-safe; time is an argument-free clock so tests can drive it."""

    def __init__(self, pid: int | None, grace_s: float = ORPHAN_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self._lock = threading.Lock()
        self._pid = pid
        self._started = start_time(pid) if pid else None
        self._since: float | None = None  # when the owner was first seen gone

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Owner:
        e = os.environ if env is None else env
        raw = (e.get("QUART_KEYS_OWNER_PID") or "").strip()
        grace = float(e.get("QUART_KEYS_ORPHAN_GRACE_S") or ORPHAN_GRACE_S)
        if grace < 0:
            raise ValueError(f"QUART_KEYS_ORPHAN_GRACE_S={grace:g} must be >= 0")
        return cls(int(raw) if raw.isdigit() else None, grace)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._pid

    def orphaned(self) -> bool:
        """True when there was an owner and it is gone (a provider may adopt us)."""
        with self._lock:
            if self._pid is None:
                return False
            gone = not alive(self._pid, self._started)
            if gone and self._since is None:
                self._since = self.clock()
            return gone

    def adopt(self, pid: int) -> None:
        """``pid`` (a provider of this state dir) owns us from now on."""
        started = start_time(pid)
        if started is None:
            raise ValueError(f"owner pid {pid} is not running")
        with self._lock:
            self._pid, self._started, self._since = pid, started, None

    def expired(self) -> bool:
        """Orphaned for longer than the grace period: time to stop everything."""
        if not self.orphaned():
            return False
        with self._lock:
            return self._since is not None and self.clock() - self._since >= self.grace_s
