"""How many threads of *other* programs compete for the cores while a live run is measured.

Why: validation runs on a shared 2-core machine where other programs keep
several threads runnable; a replica then computes at a fraction of a core
and the live pipeline saturates at loads the simulator, modelling a
dedicated node, would call light.  The simulator can model that sharing
(``NodeSpec.background``: always-runnable threads in the node's processor
sharing) if it is told how many there were.

How: every ``interval_s`` read ``procs_running`` from ``/proc/stat`` (the
kernel's count of runnable threads, the running ones included) and count the
threads of the measured replicas in state ``R`` (``/proc/<pid>/task/*/stat``);
background = total - replicas' - 1 (the sampler itself, running while it
reads).  Everything not modelled as a replica counts as background: other
sessions, the gateway, the load generator.  The count fluctuates (another
session's test suite can hold both cores for seconds), so besides the mean
the sampler gives a step-function ``trace`` the simulator can replay
(``NodeSpec.background`` accepts one).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BackgroundLoad", "RunnableSampler", "runnable_threads"]


def _procs_running() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("procs_running"):
                return int(line.split()[1])
    raise RuntimeError("/proc/stat has no procs_running line")


def runnable_threads(pids: Sequence[int]) -> int:
    """Threads of ``pids`` in state R right now (gone processes count 0)."""
    n = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "R":
                n += 1
    return n


@dataclass(frozen=True)
class BackgroundLoad:
    mean: float  # runnable threads of other programs, on average
    replicas: float  # runnable threads of the measured replicas, on average
    samples: int


class RunnableSampler:
    """Samples in a thread between ``start`` and ``stop``; ``pids()`` is read once, at
    start (the measured runs keep a fixed set of replicas)."""

    def __init__(self, pids: Callable[[], Sequence[int]], interval_s: float = 0.1) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.pids = pids
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._bg: list[int] = []
        self._ours: list[int] = []
        self._t: list[float] = []
        self.t0 = 0.0
        self._thread = threading.Thread(target=self._run, name="runnable-sampler", daemon=True)

    def start(self) -> RunnableSampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        pids = list(self.pids())
        next_t = time.monotonic()
        while not self._stop.is_set():
            ours = runnable_threads(pids)
            total = _procs_running()
            self._ours.append(ours)
            self._bg.append(max(0, total - ours - 1))
            self._t.append(time.monotonic() - self.t0)
            next_t += self.interval_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> BackgroundLoad:
        self._stop.set()
        self._thread.join()
        n = len(self._bg)
        return BackgroundLoad(sum(self._bg) / n if n else 0.0,
                              sum(self._ours) / n if n else 0.0, n)

    def trace(self, step_s: float = 0.5, offset_s: float = 0.0) -> tuple[tuple[float, float], ...]:
        """The background as a step function: (start, mean over [start, start + step)) with
        times relative to ``start() + offset_s`` (the run's own clock)."""
        if step_s <= 0:
            raise ValueError("step_s must be > 0")
        bins: dict[int, list[int]] = {}
        for t, b in zip(self._t, self._bg, strict=True):
            if t >= offset_s:
                bins.setdefault(int((t - offset_s) // step_s), []).append(b)
        return tuple((k * step_s, sum(v) / len(v)) for k, v in sorted(bins.items()))
