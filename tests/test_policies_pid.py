"""Eq. 2-3: PID sign, anti-windup, derivative on measurement; replica correction."""

from __future__ import annotations

import pytest

from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from gateway_plugin.policies.pid import PIDConfig, PIDState, pid_step, relative_error
from gateway_plugin.policies.replica_corrector import (
    CorrectorConfig,
    CorrectorState,
    correct_pipeline,
    critical_stages,
    split_slo,
)

SYMMETRIC = PIDConfig(output_min=-1.0, output_max=1.0)

# ---------------------------------------------------------------- PID alone

SIGN_TABLE = [
    # (setpoint, measurement, expected error, expected output) with kp=2, first call (no I, no D)
    (0.1, 0.12, 0.2, 0.4),  # 20% too slow -> +0.4: add replicas
    (0.1, 0.08, -0.2, -0.4),  # 20% too fast -> -0.4
    (0.1, 0.10, 0.0, 0.0),
    (0.2, 0.50, 1.5, 1.0),  # 2*1.5 = 3 saturates at +1
]


@pytest.mark.parametrize(("r", "y", "e", "u"), SIGN_TABLE)
def test_pid_sign_latency_above_target_is_positive(r: float, y: float, e: float, u: float) -> None:
    step = pid_step(r, y, None, PIDState(), SYMMETRIC)
    assert step.error == pytest.approx(e)
    assert step.output == pytest.approx(u)
    assert relative_error(r, y) == pytest.approx(e)


def test_pid_integrates_error_times_dt() -> None:
    # e = 0.2, dt = 5 s: integral = 0 + 0.2*5 = 1.0, I = 0.3*1.0 = 0.3
    # P = 2*0.2 = 0.4, D = 0.1*(0.12-0.12)/(0.1*5) = 0 -> u = 0.7
    state = PIDState(integral=0.0, last_measurement=0.12)
    step = pid_step(0.1, 0.12, 5.0, state, PIDConfig())
    assert (step.p_term, step.i_term, step.d_term) == pytest.approx((0.4, 0.3, 0.0))
    assert step.output == pytest.approx(0.7)
    assert step.state.integral == pytest.approx(1.0)
    assert step.integrated


def test_no_integration_while_saturated_in_the_error_direction() -> None:
    # integral 2.0 -> I = 0.6; e = +0.5 -> P = 1.0; u_old = 1.6 >= output_max 1 and e > 0:
    # integrating would store 0.5*5 more error-seconds that must be unwound later.
    state = PIDState(integral=2.0, last_measurement=0.15)
    step = pid_step(0.1, 0.15, 5.0, state, PIDConfig())
    assert not step.integrated
    assert step.state.integral == 2.0
    assert step.output == 1.0
    # Saturated at the top but the error is negative: integrating *unwinds*, so it is allowed.
    # e = -0.5 -> P = -1.0, u_old = -1.0 + 0.6 = -0.4 ... below output_min 0 with e < 0: frozen.
    step = pid_step(0.1, 0.05, 5.0, state, PIDConfig())
    assert not step.integrated and step.output == 0.0
    # e = -0.1 -> P = -0.2, u_old = 0.4 (inside the limits): integral 2.0 - 0.1*5 = 1.5
    step = pid_step(0.1, 0.09, 5.0, PIDState(2.0, 0.09), PIDConfig())
    assert step.integrated and step.state.integral == pytest.approx(1.5)


def test_anti_windup_limits_what_a_long_overload_leaves_behind() -> None:
    """20 periods at e=+0.3, then e=-0.1: the output must come down within 3 periods."""
    cfg = PIDConfig(kd=0.0)
    state = PIDState()
    outputs = []
    for _ in range(20):
        step = pid_step(1.0, 1.3, 5.0, state, cfg)
        state = step.state
        outputs.append(step.output)
    # period 1: P = 0.6, u_old = 0.6 < 1 -> integrate 0.3*5 = 1.5, I = 0.45, u = 1.05 -> 1.0
    # period 2..20: u_old = 0.6 + 0.45 >= 1 with e > 0 -> frozen at 1.5
    assert outputs == [1.0] * 20
    assert state.integral == pytest.approx(1.5)
    # error turns to -0.1 (P = -0.2):
    # 1: u_old = -0.2 + 0.45 = 0.25 -> integrate 1.5 - 0.5 = 1.0, I = 0.30, u = 0.10
    # 2: u_old = -0.2 + 0.30 = 0.10 -> integrate 1.0 - 0.5 = 0.5, I = 0.15, u = -0.05 -> 0
    after = []
    for _ in range(2):
        step = pid_step(1.0, 0.9, 5.0, state, cfg)
        state = step.state
        after.append(step.output)
    assert after == pytest.approx([0.10, 0.0])
    # Without conditional integration the integral would sit at its clamp 1/0.3 (I = 1.0):
    # u = -0.2 + 1.0 = 0.8 on the first period after the overload, and it would take
    # (3.333 - 0.667)/0.5 = 6 periods of unwinding before the output reached 0.


def test_integral_is_clamped() -> None:
    # Never saturated (output_max 100), e = 0.2 for 100 periods of 5 s: the raw
    # integral would be 100; the clamp keeps |ki*integral| <= integral_limit = 1.
    cfg = PIDConfig(kd=0.0, output_max=100.0)
    state = PIDState()
    for _ in range(100):
        state = pid_step(0.1, 0.12, 5.0, state, cfg).state
    assert state.integral == pytest.approx(1.0 / 0.3)


def test_derivative_on_measurement_has_no_setpoint_kick() -> None:
    cfg = PIDConfig(kp=2.0, ki=0.0, kd=0.1, output_max=10.0)
    # Setpoint halves (0.1 -> 0.05), measurement stays 0.1, dt = 0.1 s.
    # Derivative on error would add kd*(e_now - e_prev)/dt = 0.1*(1.0 - 0.0)/0.1 = 1.0.
    # On the measurement it is 0.1*(0.1 - 0.1)/(0.05*0.1) = 0, so u = P = 2*1.0 = 2.0.
    step = pid_step(0.05, 0.1, 0.1, PIDState(last_measurement=0.1), cfg)
    assert step.d_term == 0.0
    assert step.output == pytest.approx(2.0)
    # The measurement itself rising does count: 0.1 -> 0.12 at setpoint 0.1 in 0.1 s:
    # D = 0.1*0.02/(0.1*0.1) = 0.2, P = 2*0.2 = 0.4 -> u = 0.6.
    step = pid_step(0.1, 0.12, 0.1, PIDState(last_measurement=0.1), cfg)
    assert step.d_term == pytest.approx(0.2)
    assert step.output == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [((0.0, 0.1, 1.0), "setpoint"), ((0.1, -0.1, 1.0), "measurement"), ((0.1, 0.1, -1.0), "dt_s")],
)
def test_pid_rejects_bad_input(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        pid_step(*args, PIDState(), PIDConfig())


def test_pid_defaults_are_the_seed_gains() -> None:
    cfg = PIDConfig()
    assert (cfg.kp, cfg.ki, cfg.kd) == (2.0, 0.3, 0.1)


# ---------------------------------------------------------------- SLO split and critical stages


def test_split_slo_chain_in_proportion_to_service_time() -> None:
    # 0.1 : 0.3 of an 0.8 s SLO -> 0.2 s and 0.6 s
    assert split_slo([0.1, 0.3], 0.8) == pytest.approx([0.2, 0.6])


def test_split_slo_dag_uses_longest_path_through_each_stage() -> None:
    # Diamond a->b->d, a->c->d with service times a=.1 b=.3 c=.1 d=.1, SLO 1 s.
    # Longest path a-b-d = 0.5 s: a, b, d get 1.0*s/0.5 = 0.2, 0.6, 0.2.
    # c lies only on a-c-d = 0.3 s: 1.0*0.1/0.3 = 0.3333. Each path sums to <= 1 s.
    budgets = split_slo([0.1, 0.3, 0.1, 0.1], 1.0, [(0, 1), (0, 2), (1, 3), (2, 3)])
    assert budgets == pytest.approx([0.2, 0.6, 1 / 3, 0.2])
    with pytest.raises(ValueError, match="cycle"):
        split_slo([0.1, 0.1], 1.0, [(0, 1), (1, 0)])


def test_critical_stages_by_latency_share_and_queue() -> None:
    # shares: 0.3/0.2 = 1.5, 0.3/0.6 = 0.5, None; longest queue is stage 1
    assert critical_stages([0.3, 0.3, None], [0.2, 0.6, 0.2], [0, 7, 2]) == [True, True, False]
    assert critical_stages([0.3, 0.3], [0.2, 0.6], [None, 0]) == [True, False]


# ---------------------------------------------------------------- replica correction


def _stage(name: str, replicas: int, p99: float | None, **kw: float) -> StageObservation:
    return StageObservation(
        name=name,
        replicas=replicas,
        arrival_rate=kw.get("lam", 8.0),
        service_time_s=kw.get("s", 0.2),
        latency_p99_s=p99,
        queue_depth=kw.get("queue"),
    )


def _pipe(*stages: StageObservation, slo: float | None = None, now: float = 0.0):
    # Two stages of 0.2 s share 1.2 s -> 0.6 s each; at lambda=8, mu=5 M/M/c needs c=2
    # (W(2) = 0.5556 s <= 0.6, see test_policies_mmc).
    return PipelineObservation("p", slo if slo is not None else 0.6 * len(stages), now, stages)


def _by_name(corrections):
    return {c.name: c for c in corrections}


def test_latency_above_target_adds_replicas() -> None:
    # a: 0.9 s vs 0.6 s -> e = +0.5, P = 1.0 = output_max -> 2*(1+1) = 4 (critical: share 1.5)
    # b: 0.3 s vs 0.6 s -> e = -0.5, u clamps to 0 -> the M/M/c count 2 = current: hold
    out, _ = correct_pipeline(
        _pipe(_stage("a", 2, 0.9), _stage("b", 2, 0.3)), {}, None, CorrectorConfig()
    )
    a, b = _by_name(out)["a"], _by_name(out)["b"]
    assert a.pid_output > 0 and a.replicas == 4 and a.critical
    assert a.replicas > 2, "latency above target must never remove replicas"
    assert a.reason.startswith("scale up 2->4")
    assert b.replicas == 2 and not b.critical and b.reason.startswith("hold 2")


def test_critical_stage_rounds_up() -> None:
    # a: 0.66 s -> e = 0.1, u = 0.2 -> 2*1.2 = 2.4; a is critical (share 1.1) -> ceil = 3
    # b: 0.63 s -> e = 0.05, u = 0.1 -> 2.2, not critical -> round = 2 (hold)
    out, _ = correct_pipeline(
        _pipe(_stage("a", 2, 0.66), _stage("b", 2, 0.63)), {}, None, CorrectorConfig()
    )
    got = _by_name(out)
    assert (got["a"].replicas, got["a"].critical) == (3, True)
    assert (got["b"].replicas, got["b"].critical) == (2, False)


def test_tolerance_band_holds() -> None:
    # Same as above but tolerance 25%: 2.4/2 = 1.2 is inside +-25% -> hold 2.
    out, _ = correct_pipeline(
        _pipe(_stage("a", 2, 0.66), _stage("b", 2, 0.63)), {}, None, CorrectorConfig(tolerance=0.25)
    )
    assert _by_name(out)["a"].replicas == 2
    assert "band" in _by_name(out)["a"].reason


def test_decision_never_below_mmc_minimum() -> None:
    # One replica, latency far under budget, but lambda=8 > mu=5: M/M/c needs 2.
    out, _ = correct_pipeline(_pipe(_stage("a", 1, 0.2)), {}, None, CorrectorConfig())
    assert out[0].replicas == 2 and out[0].mmc_replicas == 2
    assert "feedforward only" in out[0].reason


def test_scale_down_waits_and_takes_the_largest_wish() -> None:
    cfg = CorrectorConfig(pid=PIDConfig(ki=0.0, kd=0.0), scale_down_periods=3)
    state: dict[str, CorrectorState] = {}
    # single stage, budget 0.6 s, M/M/c 2, currently 4.
    # t=0: 0.25 s -> u = 0 -> wants 2: hold (1/3)
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.25)), state, None, cfg)
    assert out[0].replicas == 4 and "1/3" in out[0].reason
    # t=10: 0.55 s, under budget -> e = -0.08, u = 0 -> wants 2: hold (2/3)
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.55), now=10), state, 10.0, cfg)
    assert out[0].replicas == 4 and "2/3" in out[0].reason
    # t=20: wants 2 again; third period -> scale down to the largest wish, 2
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.25), now=20), state, 10.0, cfg)
    assert out[0].replicas == 2 and out[0].reason.startswith("scale down 4->2 after 3")
    assert state["a"].down_streak == 0


def test_latency_above_budget_never_scales_down() -> None:
    # budget 0.6 s, 4 replicas, M/M/c needs 2.  At 0.75 s (e = +0.25, u = 0.5) the PID
    # alone would want 2 * 1.5 = 3 < 4: removing a replica while over budget is refused,
    # and the period breaks a scale-down streak.
    cfg = CorrectorConfig(pid=PIDConfig(ki=0.0, kd=0.0), scale_down_periods=2)
    pending = {"a": CorrectorState(down_streak=1, down_target=2)}
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.75)), pending, 10.0, cfg)
    assert out[0].replicas == 4 and "no scale-down" in out[0].reason
    assert state["a"].down_streak == 0


def test_scale_down_streak_resets_on_a_period_that_does_not_want_less() -> None:
    cfg = CorrectorConfig(pid=PIDConfig(ki=0.0, kd=0.0), scale_down_periods=2)
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.25)), {}, None, cfg)
    assert out[0].replicas == 4
    # 0.9 s -> u = 1 -> wants 4 = current: streak resets
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.9)), state, 10.0, cfg)
    assert state["a"].down_streak == 0
    out, state = correct_pipeline(_pipe(_stage("a", 4, 0.25)), state, 10.0, cfg)
    assert out[0].replicas == 4 and state["a"].down_streak == 1


def test_missing_metrics_hold_and_never_scale_down() -> None:
    pending = {"a": CorrectorState(down_streak=2, down_target=2)}
    cfg = CorrectorConfig(scale_down_periods=3)
    out, state = correct_pipeline(_pipe(_stage("a", 4, None)), pending, 10.0, cfg)
    assert out[0].replicas == 4
    assert "missing latency_p99_s" in out[0].reason and "no scale-down" in out[0].reason
    assert state["a"].down_streak == 0  # a gap breaks "consecutive"
    # No rates at all: still a hold, not a zero.
    blind = StageObservation("a", 4)
    out, _ = correct_pipeline(_pipe(blind), {}, None, cfg)
    assert out[0].replicas == 4 and "arrival_rate" in out[0].reason
    # Missing latency but rates say one replica is unstable: the M/M/c floor still raises it.
    out, _ = correct_pipeline(_pipe(_stage("a", 1, None)), {}, None, cfg)
    assert out[0].replicas == 2


def test_budget_below_service_time_does_not_chase_replicas() -> None:
    # budget 0.15 s < 0.2 s service: no count meets it. Keep the wait within 10%:
    # smallest c with W <= 0.22 s: W(3) = 0.2391, W(4): B(4) = 0.056469, C = 0.090701,
    # W_q = 0.090701/(20-8) = 0.00756 -> W = 0.2076 <= 0.22 -> 4. PID does not add on top.
    out, _ = correct_pipeline(_pipe(_stage("a", 4, 0.3), slo=0.15), {}, 10.0, CorrectorConfig())
    assert out[0].replicas == 4 and "replicas cannot meet" in out[0].reason
    assert out[0].pid_output == 0.0


def test_clamped_to_max_replicas() -> None:
    out, _ = correct_pipeline(_pipe(_stage("a", 2, 0.9)), {}, None, CorrectorConfig(max_replicas=3))
    assert out[0].replicas == 3
