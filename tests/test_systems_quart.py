"""Quart and its ablations as compared systems, and the static baseline.

M/M/c counts are worked by hand (Erlang B recursion, then C, W_q, W):
lambda 30, mu 20 (50 ms), a = 1.5.
  c=2: B = 0.9/2.9 = 0.3103, rho 0.75, C = 0.3103 / (1 - 0.75 x 0.6897) = 0.6429,
       W = 0.6429 / (40 - 30) + 0.05 = 0.1143 s
  c=3: B = 0.4655/3.4655 = 0.1343, rho 0.5, C = 0.1343 / 0.5672 = 0.2368,
       W = 0.2368 / 30 + 0.05 = 0.0579 s
A 3-stage chain of equal stages splits the SLO in three: 0.5 s -> 0.1667 s a
stage (c=2 meets it), 0.3 s -> 0.1 s (c=2 does not, c=3 does).
"""

from __future__ import annotations

import json

import pytest

from benchmark.systems.base import Bounds, Tick
from benchmark.systems.registry import SYSTEMS
from benchmark.systems.static import Static, load_plan
from gateway_plugin.policies.cv_predict import select_predictor
from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from planner.cli import main as plan_main
from tests.planner_helpers import STACK


def chain(t, reps, *, name="p", prefix="s", p99=0.12, slo=0.5, rate=30.0, cvs=(1.0, 1.0, 1.0)):
    stages = tuple(
        StageObservation(
            f"{prefix}{i}",
            replicas=reps[i],
            arrival_rate=rate,
            service_time_s=0.05,
            service_cv=0.5,
            latency_mean_s=0.08,
            latency_p99_s=p99,
            arrival_cv=cvs[i],
            departure_cv=cvs[i],
            cpu_cores=1.0,
            cpu_s_per_request=0.05,
            queue_depth=0.5,
        )
        for i in range(3)
    )
    return PipelineObservation(name, slo, t, stages)


def run(system, reps, periods, **kw):
    state = system.initial_state()
    out = {}
    for k in range(periods):
        out, state = system.decide(Tick(k * system.period_s, (chain(k * 5.0, reps, **kw),)), state)
        reps = [out[f"s{i}"].replicas for i in range(3)]
    return out, state


# --------------------------------------------------------------------------- Quart


def test_ablation_ladder_switches_the_documented_parts():
    b = Bounds(1, 20)
    mmc, pid, smooth, full, nofork = (
        SYSTEMS[n](b) for n in ("quart-mmc", "quart-pid", "quart-smooth", "quart", "quart-nofork")
    )
    assert (
        mmc.config.corrector.pid.kp,
        mmc.config.corrector.pid.ki,
        mmc.config.corrector.pid.kd,
    ) == (0.0, 0.0, 0.0)
    assert not mmc.config.smoothing and not mmc.config.cpu_compensation
    assert pid.config.corrector.pid.kp == 2.0 and not pid.config.smoothing
    assert smooth.config.smoothing and not smooth.config.cpu_compensation
    assert full.config.smoothing and full.config.cpu_compensation
    assert [s.scaleup for s in (mmc, pid, smooth, full, nofork)] == ["fork"] * 4 + ["cold"]
    assert full.period_s == 5.0 and full.train_every == 12  # the plugin's defaults
    assert (full.config.corrector.min_replicas, full.config.corrector.max_replicas) == (1, 20)


def test_quart_mmc_is_the_mmc_count_on_a_steady_load():
    out, _ = run(SYSTEMS["quart-mmc"](Bounds(1, 20)), [1, 1, 1], 4)
    assert {o.replicas for o in out.values()} == {2}
    out, _ = run(SYSTEMS["quart-mmc"](Bounds(1, 20)), [1, 1, 1], 4, slo=0.3)
    assert {o.replicas for o in out.values()} == {3}
    assert all(o.cpu is None for o in out.values())


def test_pid_adds_replicas_when_p99_is_over_budget():
    # p99 0.3 s against a 0.1667 s budget: e = 0.8, P = 1.6 -> u saturates at 1.0;
    # every stage is equally critical (rounds up): max(2, 2 x (1 + 1)) = 4.  M/M/c alone: 2.
    out_mmc, _ = run(SYSTEMS["quart-mmc"](Bounds(1, 20)), [2, 2, 2], 1, p99=0.3)
    out_pid, _ = run(SYSTEMS["quart-pid"](Bounds(1, 20)), [2, 2, 2], 1, p99=0.3)
    assert {o.replicas for o in out_mmc.values()} == {2}
    assert {o.replicas for o in out_pid.values()} == {4}
    assert "u=1.00" in out_pid["s0"].reason


def test_smoothing_moves_replicas_ahead_of_a_burst_and_cpu_compensation_sets_cpu():
    # stage 0 sees arrival CV 4: the predictor says stage 1 will too, so quart-smooth gives
    # stage 1 more than the corrector's 2; quart-pid does not look ahead.
    kw = {"cvs": (4.0, 1.0, 1.0)}
    out_pid, _ = run(SYSTEMS["quart-pid"](Bounds(1, 20)), [2, 2, 2], 1, **kw)
    out_sm, _ = run(SYSTEMS["quart-smooth"](Bounds(1, 20)), [2, 2, 2], 1, **kw)
    assert out_pid["s1"].replicas == 2
    assert out_sm["s1"].replicas > 2 and "smoothing" in out_sm["s1"].reason
    out_full, _ = run(SYSTEMS["quart"](Bounds(1, 20)), [2, 2, 2], 1, **kw)
    assert all(o.cpu is not None for o in out_full.values())


def test_state_round_trips_and_decide_is_pure():
    q = SYSTEMS["quart"](Bounds(1, 6))
    out, state = run(q, [1, 1, 1], 5, p99=0.4)
    assert state.periods == 5
    assert state.quart.pipelines["p"].last_now_s == 20.0
    assert all(1 <= o.replicas <= 6 for o in out.values())
    # the same state and tick give the same answer twice: nothing was mutated
    tk = Tick(25.0, (chain(25.0, [3, 3, 3], p99=0.4),))
    first = q.decide(tk, state)
    second = q.decide(tk, state)
    assert first[0] == second[0] and first[1].periods == second[1].periods == 6
    assert state.periods == 5


def test_gat_is_trained_periodically_from_the_history():
    q = SYSTEMS["quart"](
        Bounds(1, 20), train_every=3, train_epochs=3, min_samples=4, history_max=50
    )
    state = q.initial_state()
    for k in range(3):
        tick = Tick(
            5.0 * k,
            (
                chain(5.0 * k, [2, 2, 2], cvs=(1 + k, 1.0, 1.0)),
                chain(5.0 * k, [2, 2, 2], name="q", prefix="r"),
            ),
        )
        _, state = q.decide(tick, state)
        if k < 2:
            assert state.training is None
    # 3 periods x 2 pipelines -> 2 (period, next period) samples per pipeline
    assert state.training is not None and state.training["samples"] == 4
    assert state.training["pipelines"] == 2
    assert state.quart.gat_checkpoint is not None
    # the GAT and the baselines were scored, and the winner by held-out MAE is the one in use
    errors = state.training["validation_mae"]
    assert "gat" in errors and len(errors) >= 2
    assert (state.quart.predictor, state.quart.predictor_reason) == select_predictor(errors)
    assert state.training["predictor"] == state.quart.predictor
    assert len(state.history) == 6
    off = SYSTEMS["quart"](Bounds(1, 20), train_every=0)
    _, st = run(off, [2, 2, 2], 3)
    assert st.training is None and st.history == ()


def test_quart_rejects_unknown_options():
    with pytest.raises(TypeError, match="unknown option"):
        SYSTEMS["quart"](Bounds(), gain=3)
    with pytest.raises(ValueError, match="train_every"):
        SYSTEMS["quart"](Bounds(), train_every=-1)


# --------------------------------------------------------------------------- static


def test_static_sizes_with_mmc_at_the_mean_rate_once():
    st = Static(Bounds(1, 20), mean_rps=30.0)
    out, state = st.decide(Tick(0.0, (chain(0.0, [1, 1, 1], rate=500.0),)), st.initial_state())
    assert {o.replicas for o in out.values()} == {2}  # the mean rate, not the observed 500
    out, _ = st.decide(Tick(5.0, (chain(5.0, [2, 2, 2], rate=90.0, slo=0.3),)), state)
    assert {o.replicas for o in out.values()} == {2}  # frozen
    st = Static(Bounds(1, 20), mean_rps=30.0)
    out, _ = st.decide(Tick(0.0, (chain(0.0, [1, 1, 1], slo=0.3),)), st.initial_state())
    assert {o.replicas for o in out.values()} == {3}


def test_static_follows_a_gswarm_plan(tmp_path):
    # the real planner on the repo's stack.yml: 6 slots in servers of 3
    assert (
        plan_main(
            [
                "--stack",
                str(STACK),
                "--gpus",
                "6",
                "--gpus-per-server",
                "3",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    log = tmp_path / "static_execution_log.json"
    plan = load_plan(log)
    instances = json.loads(log.read_text())["plan"]["instances"]
    assert sum(plan.values()) == len(instances) == 6
    st = Static(Bounds(1, 20), plan=log)
    stages = tuple(StageObservation(n, replicas=1) for n in sorted(plan))
    out, _ = st.decide(
        Tick(0.0, (PipelineObservation("minilm", 0.5, 0.0, stages),)), st.initial_state()
    )
    assert {n: o.replicas for n, o in out.items()} == plan
    with pytest.raises(ValueError, match="no replica count for s0"):
        st.decide(Tick(0.0, (chain(0.0, [1, 1, 1]),)), st.initial_state())
    with pytest.raises(ValueError, match="int >= 0"):
        load_plan({"a": -1})


def test_a_training_round_that_cannot_be_scored_keeps_the_predictor():
    # no stage has an observed arrival CV: nothing to validate against, the round keeps
    # the predictor in use (it used to raise out of select_predictor)
    q = SYSTEMS["quart"](Bounds(1, 20), train_every=2, train_epochs=2, min_samples=2)
    state = q.initial_state()
    for k in range(2):
        pipes = tuple(
            PipelineObservation(
                name,
                0.5,
                5.0 * k,
                tuple(
                    StageObservation(
                        f"{name}{i}", replicas=2, arrival_rate=10.0, service_time_s=0.05
                    )
                    for i in range(2)
                ),
            )
            for name in ("p", "q")
        )
        out, state = q.decide(Tick(5.0 * k, pipes), state)
    assert state.training is not None and "error" not in state.training
    assert state.quart.predictor == "qna" and len(out) == 4
    assert "kept" in state.quart.predictor_reason
