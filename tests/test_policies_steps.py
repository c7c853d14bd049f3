"""Each decision names the policy step that set its value, as the steps report it (HPA style).

The cases are those of test_policies_pid / _smoothing / _cpu / _chain, worked by hand
there; here the question is only *which step* moved the count or the CPU, and why.
A step is named when its value differs from the one it was given; the last such step
of the chain is the decision's; the no-data step always names itself.
"""

from __future__ import annotations

import pytest

from gateway_plugin.actuate import Function
from gateway_plugin.controller import decision_policy, function_bounds
from gateway_plugin.policies.chain import decide
from gateway_plugin.policies.cpu_compensation import CPUConfig, CPUState, compensate
from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from gateway_plugin.policies.pid import PIDConfig
from gateway_plugin.policies.replica_corrector import (
    CorrectorConfig,
    CorrectorState,
    correct_pipeline,
    down_delay,
    hold_over_budget,
    tolerance_band,
)
from gateway_plugin.policies.smoothing import SmootherConfig, smooth_pipeline
from gateway_plugin.policies.steps import Step, last_change
from tests.test_policies_chain import CONFIG, STATE, _three_stages
from tests.test_policies_cpu import _in
from tests.test_policies_smoothing import _x

NO_ID = PIDConfig(ki=0.0, kd=0.0)


def _one(replicas: int, p99: float | None, cfg: CorrectorConfig, slo: float = 0.6,
         state: dict[str, CorrectorState] | None = None, dt: float | None = None):
    # one stage, lambda = 8/s, mu = 5/s, budget = SLO = 0.6 s -> M/M/c needs 2
    stage = StageObservation("a", replicas, arrival_rate=8.0, service_time_s=0.2,
                             latency_p99_s=p99)
    out, states = correct_pipeline(PipelineObservation("p", slo, 0.0, (stage,)), state or {},
                                   dt, cfg)
    return out[0], states


CORRECTOR_TABLE = [
    # (replicas, p99, config, expected replicas, expected step, reason starts with)
    # M/M/c 2 = current, e = +0.5 -> P = 1.0 -> 2 * 2 = 4: the PID moved it
    (2, 0.9, CorrectorConfig(), 4, "pid", "latency 900.0 ms vs 600.0 ms (e=+0.50, u=1.00)"),
    # one replica, far under budget: M/M/c alone raises it to 2 (u = 0, feedforward only)
    (1, 0.2, CorrectorConfig(), 2, "mmc", "M/M/c needs 2 for 600.0 ms"),
    # e = +0.1 -> u = 0.2 -> 2.4, critical -> 3; within ±25% of 2: the band holds 2
    (2, 0.66, CorrectorConfig(tolerance=0.25), 2, "band", "within ±25% band"),
    # the PID's 4 capped at max_replicas 3
    (2, 0.9, CorrectorConfig(max_replicas=3), 3, "bounds", "capped at max_replicas 3"),
    # M/M/c 2, u = 0 -> 2, raised back to min_replicas 3 = current: the bound held it
    (3, 0.25, CorrectorConfig(min_replicas=3), 3, "bounds", "raised to min_replicas 3"),
    # 4 replicas, 0.25 s: wants 2, first of 3 periods: the delay holds 4
    (4, 0.25, CorrectorConfig(pid=NO_ID), 4, "down_delay", "hold 4, wants 2 (1/3 periods)"),
    # e = +0.25, P = 0.5 -> 3 < 4 while over budget: held
    (4, 0.75, CorrectorConfig(pid=NO_ID), 4, "over_budget", "latency above budget"),
    # no latency: the no-data result names itself even when it holds
    (4, None, CorrectorConfig(), 4, "no_data", "missing latency_p99_s: hold 4"),
]


@pytest.mark.parametrize(("replicas", "p99", "cfg", "expected", "step", "why"),
                         CORRECTOR_TABLE)
def test_corrector_names_the_step_that_set_the_count(
        replicas: int, p99: float | None, cfg: CorrectorConfig, expected: int, step: str,
        why: str) -> None:
    got, _ = _one(replicas, p99, cfg)
    assert got.replicas == expected
    assert got.by is not None and (got.by.policy, got.by.step) == ("corrector", step)
    assert got.by.reason.startswith(why), got.by.reason


def test_corrector_names_no_step_when_nothing_moved_the_count() -> None:
    # M/M/c 2 = current 2, e < 0 -> u = 0: every step hands on 2
    got, _ = _one(2, 0.3, CorrectorConfig())
    assert got.replicas == 2 and got.by is None and got.reason.startswith("hold 2")


def test_a_released_scale_down_is_the_models_count() -> None:
    # three periods wanting 2 (M/M/c): the delay lets the model's count through, so the
    # model is the step that set it
    cfg, state = CorrectorConfig(pid=NO_ID, scale_down_periods=3), None
    for _ in range(3):
        got, state = _one(4, 0.25, cfg, state=state, dt=10.0)
    assert got.replicas == 2 and got.reason.startswith("scale down 4->2 after 3")
    assert got.by == Step(policy="corrector", step="mmc", reason="M/M/c needs 2 for 600.0 ms")


STEP_TABLE = [
    # (function, arguments, expected (value, reason) or longer tuple)
    (tolerance_band, (3, 2.4, 2, 2, CorrectorConfig(tolerance=0.25)), (2, "within ±25% band")),
    (tolerance_band, (3, 2.4, 2, 2, CorrectorConfig(tolerance=0.1)), (3, "")),
    # never holds below the model's count (base 3 > current 2)
    (tolerance_band, (3, 2.1, 2, 3, CorrectorConfig(tolerance=0.25)), (3, "")),
    (hold_over_budget, (3, 4, 0.25), (4, "latency above budget: no scale-down")),
    (hold_over_budget, (3, 4, -0.1), (3, "")),
    (down_delay, (5, 4, CorrectorState(), 3), (5, "scale up 4->5", 0, 0)),
    (down_delay, (2, 4, CorrectorState(), 3), (4, "hold 4, wants 2 (1/3 periods)", 1, 2)),
    # third period: the largest wish of the streak (3), not this period's 2
    (down_delay, (2, 4, CorrectorState(down_streak=2, down_target=3), 3),
     (3, "scale down 4->3 after 3 periods", 0, 0)),
]


@pytest.mark.parametrize(("fn", "args", "expected"), STEP_TABLE)
def test_corrector_steps_alone(fn, args, expected) -> None:  # type: ignore[no-untyped-def]
    assert fn(*args) == expected


def test_last_change_is_the_last_step_that_moved_the_value() -> None:
    steps = (("mmc", 2, "model"), ("pid", 3, "pid"), ("band", 3, ""), ("delay", 4, "held"))
    assert last_change("corrector", 4, steps) == Step("corrector", "delay", "held")
    assert last_change("corrector", 3, steps[:3]) == Step("corrector", "pid", "pid")
    assert last_change("corrector", 2, (("mmc", 2, "m"),)) is None


def test_smoother_names_headroom_release_and_the_cap() -> None:
    a = _x(4, 1.0, 2.0, name="a")  # rising: 4*3/2 = 6 (+2)
    b = _x(6, 2.0, 1.0, name="b")  # falling: 6*2/3 = 4 (-2)
    c = _x(2, 1.0, 2.0, name="c", critical=True)  # rising: 3 (+1)
    steady = _x(3, 2.0, 2.0, name="d")
    out, _ = smooth_pipeline([a, b, c, steady], {}, SmootherConfig(release_periods=1))
    assert [(o.replicas, o.by and o.by.step) for o in out] == [
        (6, "headroom"), (4, "release"), (3, "headroom"), (3, None)]
    assert out[0].by is not None and out[0].by.policy == "smoother"
    # cap 11 (test_policies_smoothing): a's +2 is cut to +0, so the cap set a's count
    out, _ = smooth_pipeline([a, b, c], {}, SmootherConfig(release_periods=1,
                                                           max_pipeline_replicas=11))
    assert [(o.replicas, o.by and o.by.step) for o in out] == [
        (4, "cap"), (4, "release"), (3, "headroom")]
    assert out[0].by is not None and out[0].by.reason == "pipeline cap 11: granted +0 of +2"


def test_cpu_names_increment_rollback_and_nothing_on_a_hold() -> None:
    first = compensate(_in(4, 2, 40.0, 0.5), CPUState(), CPUConfig())  # 1.0 -> 1.464
    assert first.by is not None and (first.by.policy, first.by.step) == ("cpu", "increment")
    assert first.by.reason.startswith("cpu 1.00->1.46: step 0.46 towards demand 2.86")
    held = compensate(_in(2, 2, 40.0, None), first.state, CPUConfig())  # no latency
    assert held.by is None and held.cpu == first.cpu
    judged = compensate(_in(2, 2, 40.0, 0.6), held.state, CPUConfig())  # 0.6 s >= 0.5 s
    assert judged.by is not None and judged.by.step == "rollback"


def test_chain_decision_names_the_last_policy_that_moved_each_value() -> None:
    a, b, c = decide(_three_stages(), STATE, CONFIG)[0]["bert"]
    # a: the PID took 2 to 4; smoothing steady, nothing consolidated
    assert a.replicas_by is not None and a.replicas_by.step == "pid" and a.cpu_by is None
    # b: the corrector's delay held 6, then smoothing released 2 and the CPU stepped up
    assert b.replicas_by is not None and (b.replicas_by.policy, b.replicas_by.step) == (
        "smoother", "release")
    assert b.cpu_by is not None and (b.cpu_by.policy, b.cpu_by.step) == ("cpu", "increment")
    # c: no latency: the no-data hold
    assert c.replicas_by is not None and c.replicas_by.step == "no_data" and c.cpu_by is None


def _function(replicas: int, lo: int, hi: int | None) -> Function:
    return Function(name="f", replicas=replicas, available=replicas, cpu=1.0, min_replicas=lo,
                    max_replicas=hi, body={})


@pytest.mark.parametrize(("count", "lo", "hi", "expected"), [
    (4, 1, 3, (3, "com.openfaas.scale.max 3")),
    (1, 2, 5, (2, "com.openfaas.scale.min 2")),
    (3, 1, None, (3, "")),  # no max label: nothing to cap
])
def test_function_labels_are_the_loops_own_last_step(count: int, lo: int, hi: int | None,
                                                     expected: tuple[int, str]) -> None:
    assert function_bounds(count, _function(2, lo, hi)) == expected


PID_STEP = Step(policy="corrector", step="pid", reason="pid")
BAND = Step(policy="corrector", step="band", reason="band")
CPU_STEP = Step(policy="cpu", step="increment", reason="cpu")


@pytest.mark.parametrize(("action", "by", "cpu_by", "expected"), [
    ("up", PID_STEP, CPU_STEP, "corrector"),  # the count changed: whoever set it
    ("steady", BAND, CPU_STEP, "cpu"),  # count held, CPU moved: the CPU step
    ("steady", BAND, None, "corrector"),  # only a hold: the step that held it
    ("steady", None, None, "none"),
])
def test_record_policy_comes_from_the_steps(action: str, by: Step | None, cpu_by: Step | None,
                                            expected: str) -> None:
    assert decision_policy(action, by, cpu_by) == expected
