"""Burst-aware scale-down: a rate drop must exceed the counting noise of bursty arrivals."""
from __future__ import annotations

import numpy as np

from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from gateway_plugin.policies.replica_corrector import (
    CorrectorConfig,
    CorrectorState,
    correct_pipeline,
    down_delay_periods,
)

CFG = CorrectorConfig(scale_down_periods=3, max_down_delay_s=120.0)


def test_delay_is_z_squared_c_squared_over_rate() -> None:
    # Poisson at 5/s: 0.8 s of evidence suffices, the plain 3-period delay applies
    assert down_delay_periods(5.0, 1.0, 5.0, CFG) == 3
    # CV 8 at 5/s: T >= 4 * 64 / 5 = 51.2 s -> 11 periods of 5 s
    assert down_delay_periods(5.0, 8.0, 5.0, CFG) == 11
    # capped, and an idle stage (rate 0) waits the cap
    assert down_delay_periods(0.5, 8.0, 5.0, CFG) == 24
    assert down_delay_periods(0.0, 8.0, 5.0, CFG) == 24
    # unknown burstiness or no dt: the configured delay
    assert down_delay_periods(5.0, None, 5.0, CFG) == 3
    assert down_delay_periods(5.0, 8.0, None, CFG) == 3


def _obs(now: float, rate: float, replicas: int, cv: float | None) -> PipelineObservation:
    return PipelineObservation("p", 1.0, now, (StageObservation(
        "s", replicas, arrival_rate=rate, service_time_s=0.05, latency_p99_s=0.06,
        latency_mean_s=0.05, arrival_cv=cv),))


def _periods_until_scale_down(rates: list[float], cv: float | None) -> int | None:
    """Feed per-period rates, then idle periods; count idle periods until replicas drop."""
    state: dict[str, CorrectorState] = {}
    replicas, now = 6, 0.0
    for r in rates:
        now += 5.0
        (c,), state = correct_pipeline(_obs(now, r, replicas, cv), state, 5.0, CFG)
    for k in range(1, 40):
        now += 5.0
        (c,), state = correct_pipeline(_obs(now, 0.0, replicas, None), state, 5.0, CFG)
        if c.replicas < replicas:
            return k
    return None


def test_bursty_history_holds_replicas_through_idle_gaps_steady_history_does_not() -> None:
    rng = np.random.default_rng(0)
    steady = list(rng.normal(5.0, 0.3, 30).clip(0.1))
    bursty = list(np.where(rng.random(30) < 0.2, 25.0, 0.0))  # same mean, clumped
    quick = _periods_until_scale_down(steady, 1.0)
    slow = _periods_until_scale_down(bursty, 1.0)
    assert quick == 3
    assert slow is not None and slow >= 8  # the spread of past rates says "bursty"


def test_burstiness_is_the_index_of_dispersion_of_the_rates_own_window() -> None:
    # rates counted over 10 s windows, read every 5 s (the plugin reads max(2 x period, 4 s)):
    # the estimate must be the IDC of 10 s counts, computed here from the arrivals directly.
    # Scaling the rates' spread by the period instead read half of it.
    from gateway_plugin.policies import burst

    cv, lam, window, dt = 4.0, 5.0, 10.0, 5.0
    for seed in range(3):
        t = np.cumsum(np.random.default_rng(seed).gamma(1 / cv**2, cv**2 / lam, 200_000))
        ends = np.arange(window, t[-1], dt)
        counts = np.searchsorted(t, ends) - np.searchsorted(t, ends - window)
        direct = counts.var() / counts.mean()  # Var(N_T) / E[N_T]
        cfg = CorrectorConfig(rate_window_s=window, max_down_delay_s=4000.0)
        st = CorrectorState()
        for n in counts:
            st = CorrectorState(rate_avg=burst.rate_avg(n / window, st, dt, cfg),
                                rate_sq_avg=burst.rate_sq_avg(n / window, st, dt, cfg))
        got = burst.burstiness(None, None, st, dt, cfg) ** 2
        assert abs(got / direct - 1) < 0.2, (seed, got, direct)
        per_period = burst.burstiness(None, None, st, dt,
                                      CorrectorConfig(max_down_delay_s=4000.0)) ** 2
        assert abs(per_period / got - dt / window) < 1e-9


def test_the_plugin_and_its_corrector_use_one_rate_window() -> None:
    from gateway_plugin.config import PluginConfig
    from gateway_plugin.controller import quart_config
    from gateway_plugin.policies.burst import rate_window_s

    assert rate_window_s(5.0) == 10.0 and rate_window_s(1.0) == 4.0
    cfg = PluginConfig(period_s=5.0)
    assert quart_config(cfg, 8).corrector.rate_window_s == 10.0
    assert quart_config(cfg, 8, period_s=2.0).corrector.rate_window_s == 4.0
