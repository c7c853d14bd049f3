"""Seeded open-loop arrival processes: Poisson, gamma with a given CV, step and ramp.

Burstiness is the coefficient of variation (CV) of the inter-arrival gaps.
Gamma(shape k, scale θ) has mean kθ and CV 1/√k, so a rate λ and a CV c give
k = 1/c², θ = 1/(λk); c = 1 is Poisson, c > 1 is bursty.  This is the
rate-and-CV gamma process of AlpaServe's workload generator (Li et al., OSDI
2023; ``GammaProcess`` in alpa-projects/mms ``alpa_serve/simulator/workload.py``)
and the ``--cv`` of the seed-003 comparison.  The sweep CV ∈ {0.1, 1, 2, 4, 8}
spans near-periodic to extremely bursty traffic.

Each process starts at t = 0 as an ordinary renewal process (the first
request is one gap after the start) and keeps the points in [0, duration).
Everything comes from ``numpy.random.default_rng(seed)``: one seed, one
stream, the same arrivals on every machine with the same NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from benchmark.workloads.arrivals import Arrivals, single_target

__all__ = ["CV_SWEEP", "MAX_ARRIVALS", "gamma", "poisson", "ramp", "step"]

CV_SWEEP = (0.1, 1.0, 2.0, 4.0, 8.0)
MAX_ARRIVALS = 50_000_000  # ~600 MB of arrays: beyond this a typo is likelier than intent


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def _check_expected(expected: float) -> None:
    if expected > MAX_ARRIVALS:
        raise ValueError(f"this workload would hold about {expected:.3g} arrivals, more than "
                         f"{MAX_ARRIVALS:,}: lower the rate or the duration")


def renewal_points(rng: np.random.Generator, cv: float, horizon: float,
                   mean_gap: float = 1.0) -> np.ndarray:
    """Points of a gamma renewal process (gap mean ``mean_gap``, CV ``cv``) in [0, horizon).

    Gaps are Gamma(k = 1/cv², θ = mean_gap/k), drawn in chunks until their
    running sum passes the horizon; cv = 1 draws exponential gaps.  Chunk
    sizes depend only on the arguments, so the stream is reproducible.
    """
    expected = horizon / mean_gap
    _check_expected(expected)
    k = 1.0 / (cv * cv)
    chunk = max(1024, int(expected + 4.0 * cv * math.sqrt(expected) + 16))
    pieces: list[np.ndarray] = []
    last = 0.0
    while last < horizon:
        gaps = (rng.exponential(mean_gap, chunk) if cv == 1.0
                else rng.gamma(k, mean_gap / k, chunk))
        pts = last + np.cumsum(gaps)
        pieces.append(pts)
        last = float(pts[-1])
        chunk = max(1024, chunk // 4)
        if sum(len(p) for p in pieces) > 2 * MAX_ARRIVALS:
            raise ValueError("renewal process did not reach its horizon (degenerate gaps)")
    pts = np.concatenate(pieces)
    return pts[: int(np.searchsorted(pts, horizon, side="left"))]


def _meta(kind: str, name: str | None, seed: int, duration_s: float, **params: object) -> dict:
    label = "-".join(f"{k}{v:g}" for k, v in params.items() if isinstance(v, float))
    return {"name": name or f"{kind}-{label}-{duration_s:g}s-seed{seed}",
            "kind": kind, "seed": seed, "parameters": params, "duration_s": duration_s}


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def gamma(rate_per_s: float, cv: float, duration_s: float, seed: int = 0,
          target: str = "pipeline", name: str | None = None) -> Arrivals:
    """Gamma inter-arrivals: mean 1/rate, CV ``cv`` (shape = 1/cv², scale = 1/(rate·shape))."""
    rate, c, dur = (_positive("rate_per_s", rate_per_s), _positive("cv", cv),
                    _positive("duration_s", duration_s))
    s = _seed(seed)
    times = renewal_points(np.random.default_rng(s), c, dur, mean_gap=1.0 / rate)
    return single_target(times, target, _meta("gamma", name, s, dur, rps=rate, cv=c))


def poisson(rate_per_s: float, duration_s: float, seed: int = 0, target: str = "pipeline",
            name: str | None = None) -> Arrivals:
    """Poisson arrivals (exponential gaps, CV 1) at ``rate_per_s``."""
    rate, dur = _positive("rate_per_s", rate_per_s), _positive("duration_s", duration_s)
    s = _seed(seed)
    times = renewal_points(np.random.default_rng(s), 1.0, dur, mean_gap=1.0 / rate)
    return single_target(times, target, _meta("poisson", name, s, dur, rps=rate))


def _rescaled(cumulative_total: float, inverse: Callable[[np.ndarray], np.ndarray], cv: float,
              duration_s: float, seed: int) -> np.ndarray:
    """Time rescaling: a unit-rate gamma renewal in operational time τ ∈ [0, Λ(T)), mapped
    through t = Λ⁻¹(τ).

    By the time-rescaling theorem (Brown, Barbieri, Ventura, Kass & Frank,
    *Neural Computation* 14(2), 2002) a process whose compensator is Λ is a
    unit-rate process in τ = Λ(t); running it backwards turns a stationary
    renewal process with CV c into one whose rate follows λ(t) and whose
    gaps, locally, still have CV c (each gap is stretched by ≈1/λ(t)).
    """
    tau = renewal_points(np.random.default_rng(seed), cv, cumulative_total)
    t = inverse(tau)
    # rounding in Λ⁻¹ must not push a point past the end or out of order
    t = np.minimum(np.maximum.accumulate(np.maximum(t, 0.0)), np.nextafter(duration_s, 0.0))
    return t


def step(levels: Sequence[tuple[float, float]], duration_s: float, cv: float = 1.0,
         seed: int = 0, target: str = "pipeline", name: str | None = None) -> Arrivals:
    """Piecewise-constant rate: ``levels`` are (t_start_s, rate_per_s) pairs, the first at 0.

    The rate holds from each t_start until the next one (or the end); a rate
    of 0 is an idle period.  Burstiness ``cv`` is kept in every segment by
    generating a gamma renewal process in operational time and mapping it
    through the inverse of the cumulative rate Λ(t) (time rescaling), which
    is piecewise linear here, so Λ⁻¹ is exact.
    """
    dur, c, s = _positive("duration_s", duration_s), _positive("cv", cv), _seed(seed)
    try:
        pairs = [(float(t0), float(r)) for t0, r in levels]
    except (TypeError, ValueError):
        raise ValueError("levels must be (t_start_s, rate_per_s) pairs") from None
    if not pairs:
        raise ValueError("levels must have at least one (t_start_s, rate_per_s) pair")
    starts = np.array([p[0] for p in pairs])
    rates = np.array([p[1] for p in pairs])
    if starts[0] != 0:
        raise ValueError(f"the first level must start at 0 s, got {starts[0]}")
    if np.any(np.diff(starts) <= 0):
        raise ValueError(f"level start times must increase strictly, got {starts.tolist()}")
    if starts[-1] >= dur:
        raise ValueError(f"a level starts at {starts[-1]} s, at or after duration_s {dur}")
    if not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError(f"level rates must be finite and >= 0, got {rates.tolist()}")
    ends = np.append(starts[1:], dur)
    cum = np.concatenate([[0.0], np.cumsum(rates * (ends - starts))])
    if cum[-1] <= 0:
        raise ValueError("all level rates are 0: the workload would be empty")
    live = rates > 0
    l_start, l_t, l_rate = cum[:-1][live], starts[live], rates[live]

    def inverse(tau: np.ndarray) -> np.ndarray:
        j = np.searchsorted(l_start, tau, side="right") - 1
        return l_t[j] + (tau - l_start[j]) / l_rate[j]

    _check_expected(cum[-1])
    times = _rescaled(float(cum[-1]), inverse, c, dur, s)
    meta = _meta("step", name, s, dur, levels=[list(p) for p in pairs], cv=c)
    return single_target(times, target, meta)


def ramp(rate_from: float, rate_to: float, duration_s: float, cv: float = 1.0, seed: int = 0,
         target: str = "pipeline", name: str | None = None) -> Arrivals:
    """Rate changing linearly from ``rate_from`` at 0 to ``rate_to`` at ``duration_s``.

    Same time-rescaling construction as :func:`step`: gamma renewal with CV
    ``cv`` in operational time, mapped through Λ⁻¹ with
    Λ(t) = r0·t + (r1 − r0)·t²/(2T), inverted in the cancellation-free form
    t = 2τ / (r0 + √(r0² + 2aτ)), a = (r1 − r0)/T.
    """
    dur, c, s = _positive("duration_s", duration_s), _positive("cv", cv), _seed(seed)
    r0, r1 = float(rate_from), float(rate_to)
    if not (math.isfinite(r0) and math.isfinite(r1)) or r0 < 0 or r1 < 0 or r0 + r1 == 0:
        raise ValueError(f"ramp rates must be >= 0 and not both 0, got {rate_from}, {rate_to}")
    a = (r1 - r0) / dur
    total = 0.5 * (r0 + r1) * dur

    def inverse(tau: np.ndarray) -> np.ndarray:
        root = np.sqrt(np.maximum(r0 * r0 + 2.0 * a * tau, 0.0))
        denom = r0 + root
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, 2.0 * tau / np.where(denom > 0, denom, 1.0), 0.0)

    _check_expected(total)
    times = _rescaled(total, inverse, c, dur, s)
    meta = _meta("ramp", name, s, dur, rps_from=r0, rps_to=r1, cv=c)
    return single_target(times, target, meta)
