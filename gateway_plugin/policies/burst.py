"""Burst-aware scale-down: how long a drop in load must last before it is believed.

The replica corrector's last step (``replica_corrector.down_delay``) waits
``down_delay_periods`` periods before it removes replicas.  The statistics it
waits on live here: a slow average of the arrival rate and of its square (their
spread is burstiness at the time scale of a period) and the last arrival CV seen.
"""

from __future__ import annotations

import math
from typing import Protocol


class CorrectorConfig(Protocol):
    """The corrector settings these steps read (``replica_corrector.CorrectorConfig``);
    a protocol, so this module does not import the one that imports it."""

    @property
    def scale_down_periods(self) -> int: ...
    @property
    def burst_z(self) -> float: ...
    @property
    def max_down_delay_s(self) -> float: ...
    @property
    def rate_window_s(self) -> float | None: ...


class CorrectorState(Protocol):
    """The per-stage state these steps read (``replica_corrector.CorrectorState``)."""

    @property
    def burst_cv(self) -> float: ...
    @property
    def rate_avg(self) -> float: ...
    @property
    def rate_sq_avg(self) -> float: ...

__all__ = ["burst_cv", "burstiness", "down_delay_periods", "rate_avg", "rate_sq_avg",
           "rate_window_s"]


def down_delay_periods(arrival_rate: float | None, arrival_cv: float | None,
                       dt_s: float | None, config: CorrectorConfig) -> int:
    """Periods a scale-down waits: ``scale_down_periods``, longer for bursty arrivals.

    A drop in the measured rate is only evidence of less load once it is larger
    than the counting noise.  For a renewal process with inter-arrival CV ``c``
    the count in a window of length T has variance ~ c² λ T (the index of
    dispersion of counts tends to c², Cox & Lewis, *The Statistical Analysis of
    Series of Events*, 1966, §4.5), so the relative error of the rate over T is
    c / sqrt(λ T).  Asking for that error to be at most 1/z (a z-sigma drop, z = 2
    by default) gives

        T >= z² c² / λ

    Poisson traffic (c = 1) at 5/s needs 0.8 s, i.e. the plain delay; CV 8 at
    5/s needs 51 s: the idle gaps between bursts are not a fall in load.  During a
    gap λ shrinks and T grows, up to ``max_down_delay_s``.  This is the same
    reasoning as Knative's 60 s stable window, derived from the observed CV
    instead of fixed.
    """
    base = config.scale_down_periods
    if (arrival_cv is None or arrival_cv <= 1.0 or not dt_s or dt_s <= 0
            or config.burst_z == 0):
        return base
    if not arrival_rate or arrival_rate <= 0:
        hold_s = config.max_down_delay_s
    else:
        hold_s = min(config.max_down_delay_s,
                     config.burst_z ** 2 * arrival_cv ** 2 / arrival_rate)
    return max(base, math.ceil(hold_s / dt_s - 1e-9))


def burst_cv(observed: float | None, prev: CorrectorState) -> float:
    """The last arrival CV seen: an idle gap has no inter-arrivals to measure."""
    return prev.burst_cv if observed is None else float(observed)


def rate_avg(rate: float | None, prev: CorrectorState, dt_s: float | None,
             config: CorrectorConfig) -> float:
    """Exponentially weighted rate, time constant ``max_down_delay_s / 2``."""
    if rate is None:
        return prev.rate_avg
    return _ewma(float(rate), prev.rate_avg, dt_s, config)


def _ewma(value: float, prev: float, dt_s: float | None, config: CorrectorConfig) -> float:
    if prev <= 0 or not dt_s or dt_s <= 0:
        return value
    tau = max(config.max_down_delay_s / 2.0, 1e-9)
    return prev + dt_s / (dt_s + tau) * (value - prev)


def rate_sq_avg(rate: float | None, prev: CorrectorState, dt_s: float | None,
                config: CorrectorConfig) -> float:
    """The same average of the squared rate: with ``rate_avg``, the rate's spread."""
    if rate is None:
        return prev.rate_sq_avg
    return _ewma(float(rate) ** 2, prev.rate_sq_avg, dt_s, config)


def burstiness(rate: float | None, observed_cv: float | None, prev: CorrectorState,
               dt_s: float | None, config: CorrectorConfig) -> float:
    """sqrt of the index of dispersion of the rate window's counts, or the window's CV if
    larger.

    One window's inter-arrival CV misses clumping at longer time scales (a 10 s
    window inside a CV-8 gamma process reads ~3); the spread of the measured
    rates does not.  Each rate counts the arrivals N_T of a window of T =
    ``config.rate_window_s`` seconds and divides by T, so Var(rate) = Var(N_T) / T²
    and mean(rate) = E[N_T] / T, and the index of dispersion of counts is

        IDC(T) = Var(N_T) / E[N_T] = T * Var(rate) / mean(rate),

    which tends to c² for a renewal process (Cox & Lewis 1966, §4.5).  T is the
    rate's window, not the period between samples: the plugin reads rates over
    max(2 × period, 4 s), and taking T = period halved the IDC (c² read 32 for 64 at
    CV 8), so the scale-down delay below came out half of what it derives.
    """
    avg = rate_avg(rate, prev, dt_s, config)
    sq = rate_sq_avg(rate, prev, dt_s, config)
    cv = burst_cv(observed_cv, prev)
    window = config.rate_window_s or dt_s
    if avg <= 0 or not window or window <= 0:
        return cv
    idc = window * max(0.0, sq - avg * avg) / avg
    return max(cv, math.sqrt(idc))


def rate_window_s(period_s: float) -> float:
    """The window the plugin reads rates and quantiles over (``controller.Controller``):
    two periods, so that every rate spans at least two 1 s scrapes, and at least 4 s."""
    return max(2.0 * period_s, 4.0)
