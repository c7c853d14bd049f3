"""Arrivals for several pipelines at once: gamma at a given CV, or shaped like Azure.

``mix_gamma``: each pipeline its own gamma renewal stream (its share of the
total rate, the same CV), merged.  ``mix_azure``: the minute-to-minute shape
of the busiest functions of a ``synthetic_azure`` trace (calm/burst minutes,
rates spread over orders of magnitude), one function per pipeline, each
function's counts rescaled (Poisson) to the pipeline's share of the rate, and
spread within each minute by gamma gaps at the given CV (``spacing="gamma"``).
Both are seeded; pipelines get distinct streams (seed x 16 + index).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .arrivals import Arrivals, merge
from .azure import MinuteTrace
from .generators import gamma
from .synthetic import synthetic_azure

__all__ = ["mix_azure", "mix_gamma"]


def _rates(total_rps: float, shares: Mapping[str, float]) -> dict[str, float]:
    if not (math.isfinite(total_rps) and total_rps > 0):
        raise ValueError(f"rps must be > 0, got {total_rps!r}")
    s = sum(shares.values())
    return {k: total_rps * v / s for k, v in shares.items()}


def mix_gamma(total_rps: float, cv: float, duration_s: float, shares: Mapping[str, float],
              seed: int = 0) -> Arrivals:
    """One gamma stream per pipeline (target = pipeline name), merged."""
    parts = [gamma(rate, cv, duration_s, seed=seed * 16 + i, target=name)
             for i, (name, rate) in enumerate(_rates(total_rps, shares).items())]
    return merge(parts, name=f"mix-gamma-rps{total_rps:g}-cv{cv:g}-{duration_s:g}s-seed{seed}")


def mix_azure(total_rps: float, cv: float, duration_s: float, shares: Mapping[str, float],
              seed: int = 0, n_functions: int = 200) -> Arrivals:
    """The busiest ``len(shares)`` functions of a synthetic Azure trace, one per pipeline."""
    minutes = max(1, math.ceil(duration_s / 60))
    trace = synthetic_azure(n_functions, minutes, seed=seed)
    rng = np.random.default_rng(seed)
    volume = trace.counts.sum(axis=1)
    top = np.argsort(-volume, kind="stable")[: len(shares)]
    rates = _rates(total_rps, shares)
    rows = []
    for i, rate in zip(top.tolist(), rates.values(), strict=False):
        c = trace.counts[i].astype(float)
        rows.append(rng.poisson(c * (rate * 60.0 * minutes / max(c.sum(), 1.0))))
    sub = MinuteTrace(tuple(trace.owners[i] for i in top), tuple(trace.apps[i] for i in top),
                      tuple(trace.functions[i] for i in top),
                      tuple(trace.triggers[i] for i in top), np.asarray(rows, dtype=np.int64),
                      source=trace.source)
    keys = {f"{trace.apps[i]}/{trace.functions[i]}": name
            for i, name in zip(top.tolist(), rates, strict=False)}
    arr = sub.to_arrivals(target_names=keys, spacing="gamma", cv=cv, seed=seed,
                          name=f"mix-azure-rps{total_rps:g}-cv{cv:g}-{minutes}min-seed{seed}")
    return arr.truncate(duration_s) if arr.duration_s > duration_s else arr
