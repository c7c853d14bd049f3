"""A seeded, pure simulator of pipeline observations, to train and test CV prediction.

Nothing here touches a clock or a file: a numpy Generator seeded by the caller
draws gamma inter-arrival times with a chosen coefficient of variation, the
requests flow through each stage as a FCFS G/G/c queue (gamma service times,
``c`` replicas), a stage's departures are the next stage's arrivals, and every
period the same per-stage statistics the control loop reads from Prometheus
are measured: arrival rate and CV, departure CV, service mean and CV, replicas
and utilisation.  The arrival rate and CV drift between periods (a log random
walk), so "next period's arrival CV" is a forecast, not a copy.

Why simulate rather than use the closed forms: the QNA linking equation is
itself a two-moment approximation (Whitt presents it as a heuristic), and the
point of learning a predictor is to beat it where it is wrong; training
against the formula would only teach the formula.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .cv_predict import FEATURES, CVSample

__all__ = ["StageSpec", "gamma_intervals", "make_samples", "simulate_ggc", "simulate_pipeline"]


@dataclass(frozen=True)
class StageSpec:
    service_time_s: float
    service_cv: float
    replicas: int


def gamma_intervals(rng: np.random.Generator, mean: float, cv: float, n: int) -> np.ndarray:
    """n gamma variates with the given mean and CV (shape 1/cv^2, scale mean*cv^2)."""
    if cv <= 0:
        return np.full(n, mean)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, mean / shape, size=n)


def simulate_ggc(arrivals: Sequence[float], services: Sequence[float], servers: int) -> list[float]:
    """Departure time of each request (in arrival order) from a FCFS queue with c servers."""
    free = [0.0] * servers
    out = []
    push = heapq.heapreplace
    for t, s in zip(arrivals, services, strict=True):
        start = free[0] if free[0] > t else t  # noqa: FURB136 (hot loop: no call)
        done = start + s
        push(free, done)
        out.append(done)
    return out


def _cv(times: np.ndarray) -> float:
    if times.size < 4:
        return math.nan
    gaps = np.diff(times)
    mean = gaps.mean()
    return float(gaps.std() / mean) if mean > 0 else math.nan


def simulate_pipeline(
    stages: Sequence[StageSpec],
    arrival_rates: Sequence[float],
    arrival_cvs: Sequence[float],
    period_s: float,
    seed: int,
) -> np.ndarray:
    """Per-period, per-stage observations, shape [periods, stages, len(FEATURES)].

    Period k uses ``arrival_rates[k]`` and ``arrival_cvs[k]`` for the external
    arrivals into the first stage of the chain.
    """
    rng = np.random.default_rng(seed)
    periods = len(arrival_rates)
    chunks = []
    for k in range(periods):
        lam, cv = arrival_rates[k], arrival_cvs[k]
        n = int(lam * period_s * 1.5 + 50)
        t = k * period_s + np.cumsum(gamma_intervals(rng, 1.0 / lam, cv, n))
        chunks.append(t[t < (k + 1) * period_s])
    times = np.concatenate(chunks)
    obs = np.full((periods, len(stages), len(FEATURES)), math.nan)
    edges = np.arange(periods + 1) * period_s
    for i, spec in enumerate(stages):
        services = gamma_intervals(rng, spec.service_time_s, spec.service_cv, times.size)
        departures = np.asarray(simulate_ggc(times.tolist(), services.tolist(), spec.replicas))
        arrive_bin = np.searchsorted(edges, times, side="right") - 1
        ordered = np.sort(departures)
        depart_bin = np.searchsorted(edges, ordered, side="right") - 1
        for k in range(periods):
            a = times[arrive_bin == k]
            s = services[arrive_bin == k]
            d = ordered[depart_bin == k]
            s_mean = float(s.mean()) if s.size else math.nan
            obs[k, i] = (
                a.size / period_s,
                _cv(a),
                _cv(d),
                s_mean,
                float(s.std() / s_mean) if s.size > 1 else math.nan,
                spec.replicas,
                float(s.sum()) / (spec.replicas * period_s),
            )
        times = ordered
    return obs


def make_samples(
    n_pipelines: int,
    seed: int,
    *,
    periods: int = 6,
    period_s: float = 20.0,
    max_cv: float = 4.0,
    stages_range: tuple[int, int] = (2, 5),
    rate_range: tuple[float, float] = (5.0, 25.0),
) -> list[CVSample]:
    """Random chains -> (features at t, arrival CV at t+1) samples, one group per chain.

    The first period starts from empty queues and is used only as a feature
    source, never as a target.  Utilisations are drawn in [0.3, 0.95] so both
    the regime where a queue passes bursts through (low rho) and the one where
    it smooths them (high rho, QNA's (1 - rho^2) term) are covered.
    """
    rng = np.random.default_rng(seed)
    out: list[CVSample] = []
    for g in range(n_pipelines):
        n_stages = int(rng.integers(stages_range[0], stages_range[1] + 1))
        lam0 = float(rng.uniform(*rate_range))
        cv0 = float(np.exp(rng.uniform(math.log(0.5), math.log(max_cv))))
        walk = np.exp(np.cumsum(rng.normal(0.0, 0.1, size=(2, periods + 1)), axis=1))
        rates = (lam0 * walk[0]).tolist()
        cvs = np.clip(cv0 * walk[1], 0.3, max_cv).tolist()
        specs = []
        for _ in range(n_stages):
            c = int(rng.integers(1, 7))
            rho = float(rng.uniform(0.3, 0.95))
            specs.append(StageSpec(rho * c / lam0, float(rng.uniform(0.2, 1.5)), c))
        obs = simulate_pipeline(specs, rates, cvs, period_s, int(rng.integers(2**31)))
        upstream = tuple(() if i == 0 else (i - 1,) for i in range(n_stages))
        for k in range(1, periods):
            out.append(CVSample(features=obs[k], upstream=upstream, target=obs[k + 1, :, 1],
                                group=g))
    return out
