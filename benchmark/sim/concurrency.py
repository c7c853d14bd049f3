"""Per-second average concurrency per stage: what Knative's queue-proxies and Ray Serve's
replicas report, instead of one gauge snapshot per Prometheus scrape.

Knative: each pod's queue-proxy reports its concurrency averaged over each
second (time-weighted), and the autoscaler averages those per-second values
over its stable (60 s) and panic (6 s) windows.  Ray Serve: each replica
records its ongoing requests every 0.5 s and the controller averages them over
``look_back_period_s``.  Both are means of a finely sampled signal, not one
sample every scrape interval; a 5 s scrape of an instantaneous gauge misses
most of a 1-2 s burst.

The meter samples queued + in-service requests of every stage every
``sample_s`` (0.1 s: ten samples per reported second) and closes each second
as the mean of its samples; ``drain`` hands the seconds closed since the last
call to the control tick (``Tick.concurrency``).  Only systems that read it
(``reads_concurrency``) pay for it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from .runtime import Stage

__all__ = ["ConcurrencyMeter"]


class ConcurrencyMeter:
    def __init__(self, stages: Sequence[Stage], sample_s: float = 0.1) -> None:
        if not (math.isfinite(sample_s) and 0 < sample_s <= 1.0):
            raise ValueError(f"sample_s must be in (0, 1], got {sample_s!r}")
        self.stages = list(stages)
        self.sample_s = sample_s
        self.second = 0  # the second being filled: [second, second + 1)
        self.sums = [0.0] * len(self.stages)
        self.n = 0
        self.closed: dict[str, list[tuple[float, float]]] = {s.name: [] for s in self.stages}

    def sample(self, now: float) -> None:
        sec = math.floor(now + 1e-9)
        if sec > self.second and self.n:
            self._close()
        self.second = max(self.second, sec)
        for i, s in enumerate(self.stages):
            self.sums[i] += len(s.queue) + s.inflight()
        self.n += 1

    def _close(self) -> None:
        end = float(self.second + 1)  # a second's value is reported when it ends
        for i, s in enumerate(self.stages):
            self.closed[s.name].append((end, self.sums[i] / self.n))
            self.sums[i] = 0.0
        self.n = 0

    def drain(self) -> dict[str, tuple[tuple[float, float], ...]]:
        """Per stage, the (end of second, mean concurrency) pairs closed since the last call."""
        out = {k: tuple(v) for k, v in self.closed.items()}
        for v in self.closed.values():
            v.clear()
        return out
