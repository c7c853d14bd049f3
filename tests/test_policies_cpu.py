"""Eq. 7-10 (CPU demand) and Algorithm 2 (incremental allocation with rollback)."""

from __future__ import annotations

import pytest

from gateway_plugin.policies.cpu_compensation import (
    CPUConfig,
    CPUInput,
    CPUState,
    compensate,
    compensate_pipeline,
    cpu_demand,
)

CFG = CPUConfig()  # min 1, max 16, increment_ratio 0.25, rho* 0.7, tolerance 2%

DEMAND_TABLE = [
    # (lambda, tau, replicas, c_a, c_s, expected cores per replica)
    # Eq. 7: 40/2 = 20 req/s; Eq. 8: 20*0.1 = 2 busy cores; K = 1 -> rho_b = rho* = 0.7;
    # Eq. 10: 2/0.7 = 2.857143
    (40.0, 0.1, 2, 1.0, 1.0, 2.857143),
    # c_a = 2: K = (4+1)/2 = 2.5, x = (0.7/0.3)/2.5 = 0.933333, rho_b = 0.933333/1.933333
    # = 0.482759 -> 2/0.482759 = 4.142857
    (40.0, 0.1, 2, 2.0, 1.0, 4.142857),
    # the same load on 4 replicas: 10 req/s, 1 busy core -> 1/0.7 = 1.428571
    (40.0, 0.1, 4, 1.0, 1.0, 1.428571),
    (400.0, 0.1, 2, 1.0, 1.0, 16.0),  # 28.6 clamped to max_cpu
    (1.0, 0.1, 2, 1.0, 1.0, 1.0),  # 0.07 clamped to min_cpu
]


@pytest.mark.parametrize(("lam", "tau", "r", "ca", "cs", "expected"), DEMAND_TABLE)
def test_cpu_demand(lam: float, tau: float, r: int, ca: float, cs: float, expected: float) -> None:
    assert cpu_demand(lam, tau, r, CFG, ca, cs) == pytest.approx(expected, rel=1e-5)


def _in(before: int, after: int, lam: float | None, latency: float | None) -> CPUInput:
    return CPUInput(name="s", replicas_before=before, replicas_after=after, arrival_rate=lam,
                    cpu_s_per_request=0.1, latency_s=latency, arrival_cv=1.0, service_cv=1.0,
                    cpu_cores=1.0)


def test_algorithm2_steps_while_latency_improves_then_rolls_back() -> None:
    # demand at 40 req/s over 2 replicas: 2.857143 cores (first row above); baseline 1.0
    steps = [
        # (before, after, lambda, latency, expected cpu, reason starts with)
        # 1: consolidation 4->2: step 0.25*(2.857143-1) = 0.464286 -> 1.464286
        (4, 2, 40.0, 0.50, 1.464286, "cpu 1.00->1.46: step"),
        # 2: 0.40 < 0.50*0.98: keep; step 0.25*(2.857143-1.464286) = 0.348214 -> 1.812500
        (2, 2, 40.0, 0.40, 1.812500, "cpu 1.46->1.81: step"),
        # 3: 0.41 >= 0.40*0.98: no improvement -> roll the 0.348214 back to 1.464286
        (2, 2, 40.0, 0.41, 1.464286, "cpu 1.81->1.46: rollback"),
        # 4: same demand: plateau, no new step
        (2, 2, 40.0, 0.40, 1.464286, "cpu 1.46: plateau"),
        # 5: load falls to 10 req/s: demand 5*0.1/0.7 = 0.71 -> min_cpu 1.0: give back to baseline
        (2, 2, 10.0, 0.30, 1.0, "cpu 1.46->1.00: give back"),
        # 6: no longer active and no consolidation: untouched
        (2, 2, 10.0, 0.30, 1.0, "cpu 1.00: no consolidation"),
    ]
    state = CPUState()
    for before, after, lam, lat, cpu, why in steps:
        d = compensate(_in(before, after, lam, lat), state, CFG)
        assert d.cpu == pytest.approx(cpu, abs=1e-5), d.reason
        assert d.reason.startswith(why), d.reason
        state = d.state
    assert not state.active


def test_algorithm2_converges_to_demand_when_every_step_helps() -> None:
    state = CPUState()
    latency, cpus = 1.0, []
    for period in range(40):
        before = 4 if period == 0 else 2
        d = compensate(_in(before, 2, 40.0, latency), state, CFG)
        state, latency = d.state, latency * 0.9
        cpus.append(d.cpu)
    assert cpus == sorted(cpus)  # only ever grows
    assert cpus[-1] == pytest.approx(2.857143, rel=1e-5)  # reaches the demand, not beyond
    assert d.reason.startswith("cpu 2.86: meets demand")


def test_missing_latency_holds_and_keeps_the_pending_step() -> None:
    first = compensate(_in(4, 2, 40.0, 0.5), CPUState(), CFG)
    held = compensate(_in(2, 2, 40.0, None), first.state, CFG)
    assert held.cpu == first.cpu and "missing" in held.reason
    assert held.state.last_step == first.state.last_step > 0
    # the step is judged once latency is back: 0.6 is worse than 0.5 -> rollback to 1.0
    judged = compensate(_in(2, 2, 40.0, 0.6), held.state, CFG)
    assert judged.cpu == pytest.approx(1.0) and "rollback" in judged.reason


def test_no_consolidation_no_change() -> None:
    # scale-up or steady replicas on an inactive stage: CPU is not this policy's business
    for before, after in [(2, 2), (2, 3)]:
        d = compensate(_in(before, after, 400.0, 0.5), CPUState(), CFG)
        assert d.cpu == 1.0 and "no consolidation" in d.reason


def test_limits_respected() -> None:
    cfg = CPUConfig(min_cpu=2.0, max_cpu=4.0, increment_ratio=1.0)
    # demand 28.6 clamped to 4; ratio 1 goes all the way in one step, never past max_cpu
    d = compensate(_in(4, 2, 400.0, 0.5), CPUState(cpu=2.0), cfg)
    assert d.cpu == 4.0


def test_pipeline_wrapper_and_state_is_plain() -> None:
    decisions, states = compensate_pipeline([_in(4, 2, 40.0, 0.5)], {}, CFG)
    assert decisions[0].cpu == pytest.approx(1.464286, abs=1e-5)
    import dataclasses
    import json

    json.dumps(dataclasses.asdict(states["s"]))


@pytest.mark.parametrize(
    "kwargs", [{"min_cpu": 0.0}, {"min_cpu": 4.0, "max_cpu": 2.0}, {"increment_ratio": 0.0}]
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CPUConfig(**kwargs)
