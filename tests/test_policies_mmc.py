"""Eq. 1 (M/M/c, Erlang C) against values worked out by hand and textbook closed forms."""

from __future__ import annotations

import math

import pytest

from gateway_plugin.policies.mmc import (
    erlang_b,
    erlang_c,
    min_replicas_for,
    mmc_queue_wait,
    mmc_stage_delay,
)

# lambda=8/s, mu=5/s, c=2 worked by hand:
#   a = 8/5 = 1.6 Erlang, rho = 1.6/2 = 0.8
#   B(1) = 1.6/(1+1.6)               = 0.615385
#   B(2) = 1.6*0.615385/(2+0.984615) = 0.984615/2.984615 = 0.329897
#   C    = B/(1 - rho*(1-B))         = 0.329897/(1 - 0.8*0.670103) = 0.329897/0.463918 = 0.711111
#   W_q  = C/(c*mu - lambda)         = 0.711111/(10-8) = 0.355556 s
#   W    = W_q + 1/mu                = 0.355556 + 0.2  = 0.555556 s
HAND_W = 0.555556

DELAY_TABLE = [
    # (lambda, mu, c, expected W seconds, how it was obtained)
    (8.0, 5.0, 2, HAND_W, "worked above"),
    (2.0, 5.0, 1, 1.0 / 3.0, "M/M/1: W = 1/(mu-lambda) = 1/3"),
    (4.5, 5.0, 1, 2.0, "M/M/1: W = 1/(5-4.5) = 2"),
    (1.0, 1.0, 2, 4.0 / 3.0, "M/M/2: W = 1/(mu(1-rho^2)) = 1/(1-0.25) = 4/3"),
    # c=3, a=2, rho=2/3: P0 = 1/(1+2+2 + (8/6)/(1/3)) = 1/9; C = 4*P0 = 4/9;
    # W_q = (4/9)/(3-2) = 0.4444; W = 1.4444
    (2.0, 1.0, 3, 1.0 + 4.0 / 9.0, "Erlang C by P0, Gross & Harris 2.3"),
    (0.0, 4.0, 3, 0.25, "no traffic: bare service time 1/mu"),
]


@pytest.mark.parametrize(("lam", "mu", "c", "expected", "why"), DELAY_TABLE)
def test_mmc_stage_delay_table(lam: float, mu: float, c: int, expected: float, why: str) -> None:
    assert mmc_stage_delay(lam, mu, c) == pytest.approx(expected, rel=1e-5), why


def test_delay_is_not_scaled_by_arrival_rate() -> None:
    """A public reconstruction returned lambda*C/(c*mu-lambda) + 1/mu (L_q, not W_q)."""
    lam, mu, c = 8.0, 5.0, 2
    wrong = lam * erlang_c(c, lam / mu) / (c * mu - lam) + 1.0 / mu  # = 3.0444
    assert wrong == pytest.approx(3.04444, rel=1e-4)
    assert mmc_stage_delay(lam, mu, c) == pytest.approx(HAND_W, rel=1e-5)
    # Little's law ties it down: lambda*W_q must equal the textbook
    # L_q = C*rho/(1-rho) = 0.711111*0.8/0.2 = 2.844444 requests.
    assert lam * mmc_queue_wait(lam, mu, c) == pytest.approx(2.844444, rel=1e-5)


@pytest.mark.parametrize(("lam", "mu", "c"), [(10.0, 5.0, 2), (11.0, 5.0, 2), (5.0, 5.0, 1)])
def test_unstable_is_infinite(lam: float, mu: float, c: int) -> None:
    # rho = lambda/(c*mu) >= 1: the queue grows without bound.
    assert mmc_stage_delay(lam, mu, c) == math.inf


def test_erlang_values() -> None:
    # B(2, 1.6) = 0.329897 and C(2, 1.6) = 0.711111 from the hand computation above.
    assert erlang_b(2, 1.6) == pytest.approx(0.329897, rel=1e-5)
    assert erlang_c(2, 1.6) == pytest.approx(0.711111, rel=1e-5)
    # M/M/1: C(1, a) = a (= rho).
    assert erlang_c(1, 0.3) == pytest.approx(0.3)


def _erlang_c_logspace(c: int, a: float) -> float:
    """Independent check: C = (a^c/c!) / ((1-rho) sum_{k<c} a^k/k! + a^c/c!) in log space."""
    rho = a / c
    log_terms = [k * math.log(a) - math.lgamma(k + 1) for k in range(c)]
    top = c * math.log(a) - math.lgamma(c + 1)
    m = max(log_terms + [top])
    s = sum(math.exp(t - m) for t in log_terms)
    t = math.exp(top - m)
    return t / ((1 - rho) * s + t)


@pytest.mark.parametrize(("c", "a"), [(50, 45.0), (1000, 950.0), (3000, 2990.0)])
def test_erlang_c_large_c_is_stable(c: int, a: float) -> None:
    # a**c overflows a float for c=1000 (950**1000); the recursion must not.
    value = erlang_c(c, a)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(_erlang_c_logspace(c, a), rel=1e-9)


MIN_TABLE = [
    # (lambda, mu, budget, max_replicas, expected c)
    (8.0, 5.0, 0.6, None, 2),  # W(2)=0.5556 <= 0.6, c=1 unstable (rho=1.6)
    # c=3, a=1.6: B(3)=1.6*0.329897/(3+0.527835)=0.149620, rho=0.5333,
    # C=0.149620/(1-0.5333*0.850380)=0.273797, W=0.273797/7+0.2=0.2391 <= 0.5
    (8.0, 5.0, 0.5, None, 3),
    (8.0, 5.0, 0.5, 2, None),  # needs 3, only 2 allowed
    (8.0, 5.0, 0.2, None, None),  # budget == 1/mu: queueing can only add to it
    (8.0, 5.0, 0.1, None, None),  # budget below the service time
    (0.0, 5.0, 0.2, None, 1),  # no traffic: one replica serves in exactly 1/mu
    (0.0, 5.0, 0.1, None, None),
    (2.0, 5.0, 1.0 / 3.0 + 1e-9, None, 1),  # M/M/1 W = 1/3 exactly fits
]


@pytest.mark.parametrize(("lam", "mu", "budget", "cap", "expected"), MIN_TABLE)
def test_min_replicas_for_table(
    lam: float, mu: float, budget: float, cap: int | None, expected: int | None
) -> None:
    assert min_replicas_for(lam, mu, budget, cap) == expected


@pytest.mark.parametrize(
    ("lam", "mu", "budget"),
    [(3.7, 1.1, 1.2), (120.0, 2.0, 0.6), (950.0, 1.0, 1.01), (0.5, 0.4, 30.0)],
)
def test_min_replicas_is_the_smallest(lam: float, mu: float, budget: float) -> None:
    c = min_replicas_for(lam, mu, budget)
    assert c is not None
    assert mmc_stage_delay(lam, mu, c) <= budget
    assert c == 1 or mmc_stage_delay(lam, mu, c - 1) > budget


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((-1.0, 5.0, 1.0), "arrival_rate"),
        ((1.0, 0.0, 1.0), "service_rate"),
        ((1.0, -2.0, 1.0), "service_rate"),
        ((math.nan, 5.0, 1.0), "arrival_rate"),
        ((1.0, 5.0, 0.0), "budget_s"),
        ((1.0, 5.0, math.inf), "budget_s"),
        ((1.0, 5.0, 1.0, 0), "replicas"),
    ],
)
def test_min_replicas_rejects_bad_input(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        min_replicas_for(*args)


@pytest.mark.parametrize("bad_c", [0, -1, 2.0, True])
def test_delay_rejects_bad_replicas(bad_c: object) -> None:
    with pytest.raises(ValueError, match="replicas"):
        mmc_stage_delay(1.0, 2.0, bad_c)  # type: ignore[arg-type]
