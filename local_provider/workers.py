"""Short-lived worker threads (replica start, drain, reconcile kicks) that shutdown waits for.

A launch in progress owns the process it is starting: on shutdown it must be
joined, not abandoned, or that replica would outlive the provider.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("local_provider.registry")


class Workers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    def spawn(self, fn: Callable[[], object], name: str) -> None:
        def wrapped() -> None:
            try:
                fn()
            except Exception:  # a worker thread must log, not vanish
                log.exception("%s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        t = threading.Thread(target=wrapped, name=name, daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def join(self, deadline: float) -> None:
        """Wait for the running workers until ``deadline`` (monotonic), at least 0.1 s each."""
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
