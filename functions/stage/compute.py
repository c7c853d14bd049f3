"""The replica's compute lock: one computation at a time, on the configured intra-op threads.

Why the thread count is set on every entry: OpenMP keeps the thread count
per OS thread. ``torch.set_num_threads`` in the main thread (the zygote, the
forked child) configures that thread only; a waitress worker thread starts
with the runtime's default, the core count (or ``OMP_NUM_THREADS``). torch
applies its own setting to such a thread lazily, at the first
``at::parallel_for``, but an MKL GEMM called before that (the first op of
every encoder layer is ``F.linear``) runs with the default and splits the
product over 2 threads on a 2-core node, which sums in another order. So a
worker thread's first request to a stage that starts with a linear layer
(stages 1..n-1) differed from later ones by up to 9e-8 after L2
normalisation, and spawned an OpenMP thread beyond the replica's CPU budget.
Setting the count costs 0.2 us, so it is set on every entry rather than
tracked per thread.
"""
from __future__ import annotations

import threading
from types import TracebackType

import torch


class ComputeLock:
    """``with lock:`` serialises computations and applies ``torch.set_num_threads(threads)``
    to the thread that holds it (see the module docstring for why)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._lock = threading.Lock()

    def __enter__(self) -> ComputeLock:
        self._lock.acquire()
        try:
            torch.set_num_threads(self.threads)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()
