"""Arrival burstiness (CV of inter-arrival times) from what a gateway exports.

Two sources, best first:

1. Inter-arrival moments.  The embedded gateway counts, per function, the gaps
   between consecutive requests: ``quart_function_interarrival_seconds_count``,
   ``_sum`` and ``_squares_sum``.  Over any window, with n, S, Q the counters'
   increases, the sample mean is m = S/n and the (biased) variance
   Q/n - m^2, so CV = sqrt(Q/n - m^2) / m (the method-of-moments estimator).
   Counters make it window-free: ``increase()`` over the control period.
2. Count dispersion, for a stock OpenFaaS gateway that exports only
   ``gateway_function_invocation_started``.  For a stationary renewal process
   the index of dispersion of counts, Var N(t) / E N(t), tends to c_a^2 as t
   grows (Cox, *Renewal Theory*, 1962, sec. 4.5; Whitt 1983 uses the same
   asymptotic as the QNA's arrival variability), so CV ~ sqrt(IDC) of
   per-bin counts.  Biased for bins holding few arrivals; the reason says so.

How good is (1)?  On gamma inter-arrivals (shape 1/CV^2), 300 arrivals put the
estimate within +-20 % of the truth almost always for CV <= 2; at CV = 4 the
second moment of a shape-1/16 gamma is so heavy-tailed that 300 arrivals
manage that only ~85 % of the time and ~1,000 are needed for 98 %
(tests/test_arrivals.py measures it).  ``min_arrivals`` guards the decision.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CvEstimate:
    cv: float | None  # None: not enough data
    n: int
    source: str  # "moments" | "dispersion" | "none"
    reason: str


def cv_from_moments(n: float, total: float, squares: float, min_arrivals: int = 30) -> CvEstimate:
    """CV of inter-arrival gaps from (count, sum, sum of squares) over a window."""
    if n < max(2, min_arrivals) or total <= 0:
        return CvEstimate(None, int(n), "none",
                          f"{n:.0f} gaps in the window (< {max(2, min_arrivals)}): no estimate")
    mean = total / n
    var = max(0.0, squares / n - mean * mean)  # rounding can make it slightly negative
    return CvEstimate(math.sqrt(var) / mean, int(n), "moments",
                      f"moments of {n:.0f} inter-arrival gaps")


def cv_from_counts(counts: Sequence[float], min_arrivals: int = 30) -> CvEstimate:
    """CV from per-bin arrival counts (index of dispersion), the stock-gateway fallback."""
    k = len(counts)
    total = float(sum(counts))
    if k < 3 or total < min_arrivals:
        return CvEstimate(None, int(total), "none",
                          f"{total:.0f} arrivals in {k} bins: too few to estimate")
    mean = total / k
    var = sum((c - mean) ** 2 for c in counts) / (k - 1)
    cv = math.sqrt(var / mean)
    note = "" if mean >= 5 else f" (only {mean:.1f} arrivals per bin: biased towards 1)"
    return CvEstimate(cv, int(total), "dispersion",
                      f"dispersion of {k} per-bin counts, {mean:.1f}/bin{note}")


def strip_namespace(function_name: str) -> str:
    """``minilm-stage-0.openfaas-fn`` and ``minilm-stage-0`` name the same function."""
    return function_name.split(".", 1)[0]
