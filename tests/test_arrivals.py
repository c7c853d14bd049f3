"""Arrival-CV estimators, fed by the embedded gateway's own counters."""
from __future__ import annotations

import numpy as np
import pytest

from gateway_plugin.arrivals import cv_from_counts, cv_from_moments, strip_namespace
from local_provider.metrics import GatewayMetrics


def gateway_counters(gaps: np.ndarray) -> tuple[float, float, float]:
    """Replay arrivals through GatewayMetrics.started with a synthetic clock; read the
    exposition back as a scraper would."""
    m = GatewayMetrics()
    times = iter(np.concatenate([[0.0], np.cumsum(gaps)]))
    m._clock = lambda: float(next(times))
    for _ in range(len(gaps) + 1):
        m.started("f.openfaas-fn")
    vals = {}
    for line in m.render().splitlines():
        if line.startswith("quart_function_interarrival_seconds_"):
            name, v = line.split(" ")
            vals[name.split("{")[0].rsplit("_seconds_", 1)[1]] = float(v)
    return vals["count"], vals["sum"], vals["squares_sum"]


@pytest.mark.parametrize("cv, n, share", [(0.5, 300, 0.95), (1.0, 300, 0.95), (2.0, 300, 0.9),
                                          (4.0, 1000, 0.9)])
def test_moment_estimator_within_20_percent(cv, n, share):
    """Gamma inter-arrivals (shape 1/CV^2) at 10/s; 40 independent seeded windows."""
    k = 1 / cv**2
    hits, ests = 0, []
    for seed in range(40):
        gaps = np.random.default_rng(seed).gamma(k, 0.1 / k, n)
        est = cv_from_moments(*gateway_counters(gaps))
        assert est.source == "moments" and est.n == n
        ests.append(est.cv)
        hits += abs(est.cv / cv - 1) <= 0.2
    assert hits / 40 >= share, f"CV {cv}: only {hits}/40 windows within +-20% ({ests})"
    assert abs(np.median(ests) / cv - 1) < 0.1  # and no gross bias


def test_poisson_at_300_arrivals_exact_numbers():
    # hand check: gaps 1, 1, 4 -> mean 2, E[x^2] = (1 + 1 + 16) / 3 = 6, var = 6 - 4 = 2,
    # CV = sqrt(2) / 2 = 0.7071
    est = cv_from_moments(3, 6.0, 18.0, min_arrivals=3)
    assert est.cv == pytest.approx(0.70710678)


def test_too_few_arrivals_gives_no_estimate():
    assert cv_from_moments(5, 1.0, 1.0).cv is None
    assert cv_from_counts([0, 1, 0]).cv is None


def test_count_dispersion_fallback():
    # Poisson counts: variance = mean -> CV 1
    counts = np.random.default_rng(1).poisson(20, 120)
    assert cv_from_counts(list(counts)).cv == pytest.approx(1.0, rel=0.2)
    # bursty renewal arrivals (gamma CV 3) binned per second: dispersion >> 1
    gaps = np.random.default_rng(2).gamma(1 / 9, 0.05 * 9, 6000)
    t = np.cumsum(gaps)
    counts = np.bincount(t.astype(int))
    assert cv_from_counts(list(counts)).cv > 2


def test_function_name_with_and_without_namespace():
    assert strip_namespace("minilm-stage-0.openfaas-fn") == strip_namespace("minilm-stage-0")


@pytest.mark.parametrize("header, seconds", [
    ("stage1;dur=12.5, stage2;dur=3", 0.0125), ('db;desc="x";dur="7"', 0.007),
    ("cache;desc=hit", None), ("", None), (None, None), ("a;dur=abc", None)])
def test_server_timing_first_entry(header, seconds):
    from contracts.server_timing import first_seconds as server_timing_first

    got = server_timing_first(header)
    assert got == (pytest.approx(seconds) if seconds is not None else None)
