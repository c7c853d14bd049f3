"""Eq. 6: Allen-Cunneen rescaling of corrected replicas by the predicted arrival CV."""

from __future__ import annotations

import random

import pytest

from gateway_plugin.policies.mmc import min_replicas_for
from gateway_plugin.policies.smoothing import (
    SmootherConfig,
    SmootherState,
    SmoothingInput,
    allen_cunneen_wait,
    min_replicas_ggc,
    smooth_pipeline,
)

# Every case below: lambda = 8/s, mu = 5/s (service 0.2 s).  From test_policies_mmc:
#   W(2) = 0.5556, W(3) = 0.2391, W(4) = 0.2076, W(5) = 0.2015 (B(5) = 0.017749,
#   C = 0.025886, W_q = 0.025886/17 = 0.00152).
# Allen-Cunneen multiplies W_q by k = (c_a^2 + c_s^2)/2, i.e. divides the wait budget by k.


def test_allen_cunneen_wait() -> None:
    # W_q(M/M/2) = 0.355556; c_a = 2, c_s = 1 -> k = 2.5 -> 0.888889
    assert allen_cunneen_wait(8.0, 5.0, 2, 2.0, 1.0) == pytest.approx(0.888889, rel=1e-5)
    assert allen_cunneen_wait(8.0, 5.0, 1, 2.0, 1.0) == float("inf")


GGC_TABLE = [
    # (budget, c_a, c_s, expected c)
    (0.6, 1.0, 1.0, 2),  # k = 1: plain M/M/c
    (0.6, 2.0, 1.0, 3),  # k = 2.5: wait budget 0.4/2.5 = 0.16 -> W <= 0.36: W(3) = 0.2391
    (0.6, 5.0, 1.0, 4),  # k = 13: 0.2 + 0.4/13 = 0.2308: W(3) = 0.2391 > it, W(4) = 0.2076
    (0.3, 6.0, 1.0, 5),  # k = 18.5: 0.2 + 0.1/18.5 = 0.2054: W(4) = 0.2076 > it, W(5) = 0.2015
    (0.3, 0.3, 1.0, 3),  # k = 0.545: 0.2 + 0.1/0.545 = 0.3835: W(2) = 0.5556, W(3) = 0.2391
    (0.6, 0.0, 0.0, 2),  # D/D/c: no wait once stable (c > a = 1.6)
    (0.15, 1.0, 1.0, None),  # below the service time
]


@pytest.mark.parametrize(("budget", "ca", "cs", "expected"), GGC_TABLE)
def test_min_replicas_ggc(budget: float, ca: float, cs: float, expected: int | None) -> None:
    assert min_replicas_ggc(8.0, 5.0, budget, ca, cs) == expected


def _x(r: int, cv: float | None, pred: float | None, **kw) -> SmoothingInput:
    return SmoothingInput(
        name=kw.get("name", "s"),
        replicas=r,
        budget_s=kw.get("budget", 0.6),
        arrival_rate=8.0,
        service_time_s=0.2,
        service_cv=1.0,
        arrival_cv=cv,
        predicted_cv=pred,
        critical=kw.get("critical", False),
    )


def _one(x: SmoothingInput, state: SmootherState | None = None, **cfg):
    out, states = smooth_pipeline(
        [x], {} if state is None else {x.name: state}, SmootherConfig(**cfg)
    )
    return out[0], states[x.name]


SMOOTH_TABLE = [
    # (replicas, observed CV, predicted CV, budget, release_periods, expected, why)
    (2, 1.0, 2.0, 0.6, 1, 3, "rising: need 2->3, 2*3/2 = 3"),
    (4, 1.0, 2.0, 0.6, 1, 6, "rising keeps the PID's extra: 4*3/2 = 6"),
    (6, 2.0, 1.0, 0.6, 1, 4, "falling: 6*2/3 = 4, release 2"),
    (2, 5.0, 0.3, 0.6, 1, 2, "falling: need 4->2, 2*2/4 = 1 but M/M/c floor is 2"),
    (4, 6.0, 0.3, 0.3, 1, 3, "falling: need 5->3, 4*3/5 = 2.4 -> 2, floor at 0.3 s is 3"),
    (4, 2.0, 2.1, 0.6, 1, 4, "change within 10%: steady"),
    (4, 2.0, None, 0.6, 1, 4, "no prediction: unchanged"),
    (4, None, 2.0, 0.6, 1, 4, "no observed CV: unchanged"),
]


@pytest.mark.parametrize(("r", "cv", "pred", "budget", "periods", "expected", "why"), SMOOTH_TABLE)
def test_smoothing_table(
    r: int,
    cv: float | None,
    pred: float | None,
    budget: float,
    periods: int,
    expected: int,
    why: str,
) -> None:
    got, _ = _one(_x(r, cv, pred, budget=budget), release_periods=periods)
    assert got.replicas == expected, why


def test_release_waits_for_consecutive_falling_forecasts() -> None:
    got, state = _one(_x(6, 2.0, 1.0), release_periods=2)
    assert got.replicas == 6 and "1/2" in got.reason and state.falling_streak == 1
    got, state = _one(_x(6, 2.0, 1.0), state, release_periods=2)
    assert got.replicas == 4 and "release 2" in got.reason and state.falling_streak == 0
    # a rising or steady forecast in between resets the count
    _, reset = _one(_x(6, 2.0, 2.0), SmootherState(falling_streak=1), release_periods=2)
    assert reset.falling_streak == 0


def test_critical_stage_is_never_a_donor() -> None:
    got, _ = _one(_x(6, 2.0, 1.0, critical=True), release_periods=1)
    assert got.replicas == 6 and "critical" in got.reason


def test_never_below_mmc_floor_on_random_inputs() -> None:
    rng = random.Random(7)
    cfg = SmootherConfig(release_periods=1)
    checked = 0
    for _ in range(300):
        lam, s = rng.uniform(0.5, 60.0), rng.uniform(0.01, 0.5)
        budget = s * rng.uniform(1.05, 6.0)
        floor = min_replicas_for(lam, 1.0 / s, budget, 20)
        if floor is None:
            continue
        x = SmoothingInput(
            name="s",
            replicas=rng.randint(floor, 20),
            budget_s=budget,
            arrival_rate=lam,
            service_time_s=s,
            service_cv=rng.uniform(0.1, 2.0),
            arrival_cv=rng.uniform(0.2, 4.0),
            predicted_cv=rng.uniform(0.2, 4.0),
        )
        out, _ = smooth_pipeline([x], {}, cfg)
        assert floor <= out[0].replicas <= 20, (x, out[0])
        checked += 1
    assert checked >= 200  # most draws have a floor: the loop did not pass by skipping them


def test_pipeline_cap_funds_increases_from_releases_critical_first() -> None:
    a = _x(4, 1.0, 2.0, name="a")  # rising: 4*3/2 = 6 (+2)
    b = _x(6, 2.0, 1.0, name="b")  # falling: 6*2/3 = 4 (-2)
    c = _x(2, 1.0, 2.0, name="c", critical=True)  # rising: 2*3/2 = 3 (+1)
    # uncapped: 6 + 4 + 3 = 13
    out, _ = smooth_pipeline([a, b, c], {}, SmootherConfig(release_periods=1))
    assert [o.replicas for o in out] == [6, 4, 3]
    # cap 11: base after releases is 4 + 4 + 2 = 10, room 1 -> the critical stage c gets it
    out, _ = smooth_pipeline(
        [a, b, c], {}, SmootherConfig(release_periods=1, max_pipeline_replicas=11)
    )
    assert [o.replicas for o in out] == [4, 4, 3]
    assert "granted +0 of +2" in out[0].reason
    # cap 12: c takes +1, a the remaining +1 of its +2; b's release paid for both
    out, _ = smooth_pipeline(
        [a, b, c], {}, SmootherConfig(release_periods=1, max_pipeline_replicas=12)
    )
    assert [o.replicas for o in out] == [5, 4, 3]


def test_no_release_when_the_corrector_held_on_missing_data() -> None:
    x = _x(6, 2.0, 1.0)
    x.may_release = False
    got, _ = _one(x, release_periods=1)
    assert got.replicas == 6 and "missing data" in got.reason
    # adding headroom is still allowed: missing data only forbids scaling down
    y = _x(2, 1.0, 2.0)
    y.may_release = False
    assert _one(y, release_periods=1)[0].replicas == 3


def test_headroom_does_not_compound_while_the_corrector_holds() -> None:
    """A rising forecast adds headroom once.  Next period the corrector holds the
    raised count (band / scale-down delay) while its own demand is unchanged:
    scaling the held count again would ratchet 3 -> 5 -> 8 ... period after period."""
    first, _ = _one(_x(2, 1.0, 2.0))
    assert first.replicas == 3
    replicas = first.replicas
    for _ in range(5):
        x = _x(replicas, 1.0, 2.0)
        x.demand = 2  # what the traffic needs, as the corrector computed it
        replicas = _one(x)[0].replicas
        assert replicas == 3
    # without the demand (an old caller) the held count is what gets scaled
    legacy = _one(_x(3, 1.0, 2.0))[0].replicas
    assert legacy > 3
