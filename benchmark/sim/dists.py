"""Random draws the simulator needs, batched, from one seeded generator per consumer.

Why batched: a numpy call costs ~1 µs of overhead whatever its size, and a
run draws millions of service times; drawing 64..8192 at a time and handing
them out from a Python list costs ~50 ns per draw.  Each stage owns its
generator (spawned from the run's ``SeedSequence``), so a stage's draws do
not depend on how other stages' requests interleave, and the same seed gives
the same run.

Parametrisations (mean m, coefficient of variation c):
  lognormal  sigma^2 = ln(1 + c^2), mu = ln m - sigma^2 / 2 (so E = m, CV = c)
  gamma      shape k = 1 / c^2, scale = m / k (CV of a gamma is 1/sqrt(k))
  exponential gamma with k = 1, the M in M/M/c
Spawn latencies are fitted from a median and a 95th percentile, the figures
``benchmark.studies.scaleup`` reports: lognormal with median p50 and
sigma = ln(p95 / p50) / z_0.95, z_0.95 = 1.6449.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Draws", "lognormal_from_quantiles", "service_draws", "with_late"]

Z95 = 1.6448536269514722
_MIN_BATCH, _MAX_BATCH = 64, 8192


class Draws:
    """An endless stream of draws from ``make(rng, n)``, produced in growing batches."""

    __slots__ = ("_batch", "_buf", "_i", "_make", "_rng")

    def __init__(self, make, rng: np.random.Generator) -> None:
        self._make = make
        self._rng = rng
        self._buf: list[float] = []
        self._i = 0
        self._batch = _MIN_BATCH

    def __call__(self) -> float:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._make(self._rng, self._batch).tolist()
            self._batch = min(_MAX_BATCH, self._batch * 2)
            i = 0
        self._i = i + 1
        return self._buf[i]


def service_draws(dist: str, mean_s: float, cv: float, rng: np.random.Generator) -> Draws:
    if dist == "deterministic" or cv == 0:
        return Draws(lambda r, n: np.full(n, mean_s), rng)
    if dist == "lognormal":
        s2 = math.log1p(cv * cv)
        mu, sigma = math.log(mean_s) - s2 / 2, math.sqrt(s2)
        return Draws(lambda r, n: r.lognormal(mu, sigma, n), rng)
    if dist in ("gamma", "exponential"):
        k = 1.0 if dist == "exponential" else 1.0 / (cv * cv)
        scale = mean_s / k
        return Draws(lambda r, n: r.gamma(k, scale, n), rng)
    raise ValueError(f"unknown service-time distribution {dist!r}")


def lognormal_from_quantiles(p50_s: float, p95_s: float, rng: np.random.Generator) -> Draws:
    if not (0 < p50_s <= p95_s):
        raise ValueError(f"need 0 < p50 <= p95, got p50={p50_s!r}, p95={p95_s!r}")
    sigma = math.log(p95_s / p50_s) / Z95
    mu = math.log(p50_s)
    return Draws(lambda r, n: r.lognormal(mu, sigma, n) if sigma > 0 else np.full(n, p50_s), rng)


def with_late(base: Draws, p: float, extra_s: tuple[float, ...],
              rng: np.random.Generator) -> Draws:
    """``base`` plus, with probability ``p``, one of ``extra_s`` (each equally likely): a
    mixture for holds that sometimes end late (``StageSpec.late_p``)."""
    if p <= 0 or not extra_s:
        return base
    pool = np.asarray(extra_s, dtype=float)

    def make(r: np.random.Generator, n: int) -> np.ndarray:
        xs = np.array([base() for _ in range(n)])
        hit = r.random(n) < p
        return xs + np.where(hit, pool[r.integers(0, len(pool), n)], 0.0)

    return Draws(make, rng)
