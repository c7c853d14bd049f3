"""QuartScaler chain: corrector -> smoother -> CPU compensator, state as JSON, speed."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from gateway_plugin.policies import cv_predict as cp
from gateway_plugin.policies.chain import (
    QuartConfig,
    QuartState,
    decide,
    samples_from_history,
    with_trained_predictor,
)
from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from gateway_plugin.policies.pipeline_sim import make_samples
from gateway_plugin.policies.smoothing import SmootherConfig

torch.set_num_threads(1)

CONFIG = QuartConfig(smoother=SmootherConfig(release_periods=1))
# predictable forecasts for the hand-worked case: next arrival CV = upstream's departure CV
STATE = QuartState(predictor="upstream_departure")


def _three_stages(now: float = 0.0, **override: dict) -> PipelineObservation:
    # SLO 1.8 s over three 0.2 s stages -> 0.6 s each; lambda = 8/s -> M/M/c needs 2 each.
    common = {
        "arrival_rate": 8.0,
        "service_time_s": 0.2,
        "service_cv": 1.0,
        "cpu_cores": 1.0,
        "cpu_s_per_request": 1.0,
    }
    a = {
        **common,
        "name": "a",
        "replicas": 2,
        "latency_p99_s": 0.9,
        "queue_depth": 5.0,
        "arrival_cv": 1.0,
        "departure_cv": 1.0,
    }
    b = {
        **common,
        "name": "b",
        "replicas": 6,
        "latency_p99_s": 0.3,
        "queue_depth": 0.0,
        "arrival_cv": 2.0,
        "departure_cv": 1.5,
    }
    c = {
        **common,
        "name": "c",
        "replicas": 3,
        "latency_p99_s": None,
        "queue_depth": 0.0,
        "arrival_cv": 1.5,
        "departure_cv": 1.5,
    }
    stages = []
    for s in (a, b, c):
        stages.append(StageObservation(**{**s, **override.get(s["name"], {})}))
    return PipelineObservation("bert", 1.8, now, tuple(stages))


def test_chain_by_hand() -> None:
    decisions, state = decide(_three_stages(), STATE, CONFIG)
    a, b, c = decisions["bert"]
    # a: 0.9 s vs 0.6 s -> e = +0.5, u = 1 -> 2*(1+1) = 4; share 1.5 and longest queue: critical.
    #    Source stage: forecast = own CV 1.0 -> steady. No consolidation -> CPU stays 1.0.
    assert (a.replicas, a.corrected_replicas, a.critical, a.cpu) == (4, 4, True, 1.0)
    # b: 0.3 s -> u = 0 -> wants 2 < 6: scale-down delay holds 6 (1/3).
    #    Forecast = a's departure CV 1.0 < observed 2.0: G/G/c need 3 -> 2, 6*2/3 = 4: release 2.
    #    Consolidated 6 -> 4: demand 8/4 * 1.0 CPU-s = 2 cores / 0.7 (CV 1) = 2.857;
    #    first step 0.25*(2.857 - 1) = 0.464 -> 1.464 cores.
    assert (b.corrected_replicas, b.replicas, b.critical) == (6, 4, False)
    assert b.cpu == pytest.approx(1.464286, abs=1e-5)
    assert b.predicted_cv == pytest.approx(1.0)
    # c: no latency -> hold 3; forecast = b's departure CV 1.5 = observed -> steady.
    assert (c.replicas, c.cpu) == (3, 1.0) and "missing latency_p99_s" in c.reason
    for d in (a, b, c):
        assert d.predictor == "upstream_departure"
        assert d.reason.count(" | ") == 2  # one part per component
    assert b.reason.startswith("hold 6, wants 2 (1/3")
    assert "release 2" in b.reason and "step 0.46" in b.reason
    json.dumps(state.to_json())


def test_state_json_round_trip_continues_identically() -> None:
    _, s1 = decide(_three_stages(0.0), STATE, CONFIG)
    restored = QuartState.from_json(json.loads(json.dumps(s1.to_json())))
    assert restored == s1
    later = _three_stages(10.0, a={"latency_p99_s": 0.66}, b={"latency_p99_s": 0.25})
    d_mem, s_mem = decide(later, s1, CONFIG)
    d_json, s_json = decide(later, restored, CONFIG)
    assert d_mem == d_json and s_mem == s_json
    # dt = now - last now = 10 s reached the PID: a at 0.66 s vs 0.6 s has e = 0.1,
    # u_old = P = 0.2 is unsaturated, so it integrates 0.1 * 10 = 1.0
    assert s_mem.pipelines["bert"].corrector["a"].pid.integral == pytest.approx(1.0)


def test_smoothing_does_not_release_a_stage_with_missing_latency() -> None:
    # b as in the hand case (forecast 1.0 < observed 2.0 would release 2), but no latency:
    # the corrector holds on missing data and smoothing must not scale it down either.
    decisions, _ = decide(_three_stages(b={"latency_p99_s": None}), STATE, CONFIG)
    b = decisions["bert"][1]
    assert b.replicas == 6 and "missing data" in b.reason
    assert b.cpu == 1.0  # nothing consolidated, nothing to compensate


def test_components_can_be_switched_off() -> None:
    # smoothing off: b keeps its corrected 6 and nobody is consolidated, so no CPU step
    off = dataclasses.replace(CONFIG, smoothing=False)
    decisions, _ = decide(_three_stages(), STATE, off)
    b = decisions["bert"][1]
    assert (b.replicas, b.cpu, b.predictor, b.predicted_cv) == (6, 1.0, "none", None)
    # CPU compensation off: the release still happens, the CPU limit is left as observed
    decisions, _ = decide(
        _three_stages(), STATE, dataclasses.replace(CONFIG, cpu_compensation=False)
    )
    b = decisions["bert"][1]
    assert (b.replicas, b.cpu) == (4, 1.0) and b.reason.count(" | ") == 1


def test_blind_period_holds_everything() -> None:
    stages = tuple(StageObservation(n, r) for n, r in (("a", 3), ("b", 1)))
    decisions, _ = decide(PipelineObservation("p", 1.0, 0.0, stages), QuartState(), QuartConfig())
    assert [d.replicas for d in decisions["p"]] == [3, 1]
    assert all("no scale-down on missing data" in d.reason for d in decisions["p"])


def test_gat_used_only_from_a_checkpoint() -> None:
    samples = make_samples(30, seed=4, periods=3)
    trained, errors = with_trained_predictor(QuartState(), samples, epochs=15, seed=0)
    assert trained.predictor == cp.select_predictor(errors)[0]
    assert trained.gat_checkpoint is not None
    forced = dataclasses.replace(trained, predictor="gat")
    decisions, after = decide(_three_stages(), forced, CONFIG)
    assert {d.predictor for d in decisions["bert"]} == {"gat"}
    assert after.gat_checkpoint is forced.gat_checkpoint
    # asked for the GAT without a checkpoint: never random weights, fall back to QNA
    decisions, _ = decide(_three_stages(), QuartState(predictor="gat"), CONFIG)
    assert {d.predictor for d in decisions["bert"]} == {"qna"}


def test_dag_pipeline_uses_longest_path_budgets() -> None:
    # Diamond a->b, a->c, b->d, c->d with service times .1/.3/.1/.1 and SLO 1 s:
    # budgets 0.2, 0.6, 1/3, 0.2 (see test_policies_pid). c is off the critical path.
    times = {"a": 0.1, "b": 0.3, "c": 0.1, "d": 0.1}
    stages = tuple(
        StageObservation(
            n,
            2,
            arrival_rate=4.0,
            service_time_s=t,
            latency_p99_s=t * 1.5,
            arrival_cv=1.5,
            departure_cv=1.2,
            service_cv=0.5,
        )
        for n, t in times.items()
    )
    edges = (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))
    obs = PipelineObservation("dag", 1.0, 0.0, stages, edges)
    for state in (
        QuartState(),
        QuartState(
            predictor="gat",
            gat_checkpoint=cp.checkpoint_to_bytes(cp.CVGAT(hidden=8, heads=2, seed=0)),
        ),
    ):
        decisions, _ = decide(obs, state, CONFIG)
        budgets = [d.budget_s for d in decisions["dag"]]
        assert budgets == pytest.approx([0.2, 0.6, 1 / 3, 0.2])
        assert all(d.predicted_cv is not None for d in decisions["dag"])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"edges": (("a", "b"), ("b", "a"))}, "cycle"),
        ({"edges": (("a", "zz"),)}, "unknown stage"),
        ({"slo_s": 0.0}, "slo_s"),
    ],
)
def test_bad_pipelines_are_rejected(kwargs: dict, error: str) -> None:
    base = {
        "name": "p",
        "slo_s": 1.0,
        "now_s": 0.0,
        "stages": (StageObservation("a", 1), StageObservation("b", 1)),
    }
    with pytest.raises(ValueError, match=error):
        PipelineObservation(**{**base, **kwargs})


def test_bad_stage_metrics_are_rejected() -> None:
    with pytest.raises(ValueError, match="arrival_rate"):
        StageObservation("a", 1, arrival_rate=-1.0)
    with pytest.raises(TypeError, match="replicas"):
        StageObservation("a", 1.5)  # type: ignore[arg-type]


def test_samples_from_history() -> None:
    h = [_three_stages(10.0, a={"arrival_cv": 3.0}), _three_stages(0.0)]
    (sample,) = samples_from_history(h)
    assert sample.features[0, 1] == 1.0  # features from t=0 (sorted by time)
    assert list(sample.target) == [3.0, 2.0, 1.5]  # arrival CVs at t=10
    assert sample.upstream == ((), (0,), (1,))


def _cluster(now: float, seed: int) -> list[PipelineObservation]:
    rng = random.Random(seed)
    out = []
    for p in range(250):
        stages = []
        for i in range(4):
            c, s = rng.randint(1, 8), rng.uniform(0.02, 0.3)
            stages.append(
                StageObservation(
                    f"p{p}-s{i}",
                    c,
                    c / s * rng.uniform(0.3, 0.9),
                    s,
                    rng.uniform(0.3, 1.5),
                    s * rng.uniform(1, 4),
                    s * rng.uniform(2, 8),
                    rng.uniform(0, 10),
                    rng.uniform(0.5, 4),
                    rng.uniform(0.5, 4),
                    1.0,
                    s * 0.8,
                )
            )
        out.append(PipelineObservation(f"p{p}", 2.0, now, tuple(stages)))
    return out


@pytest.mark.parametrize("predictor", ["qna", "gat"])
def test_1000_stages_in_one_call(predictor: str) -> None:
    """Cluster scale in one batched call (its time is the control_cycle study's business)."""
    state = QuartState()
    if predictor == "gat":
        model = cp.CVGAT(hidden=8, heads=2, seed=0)  # plumbing only: weights do not matter here
        state = QuartState(predictor="gat", gat_checkpoint=cp.checkpoint_to_bytes(model))
    first, second = _cluster(0.0, 1), _cluster(10.0, 2)
    _, state = decide(first, state, CONFIG)
    decisions, state = decide(second, state, CONFIG)
    assert sum(len(v) for v in decisions.values()) == 1000
    assert {d.predictor for v in decisions.values() for d in v} == {predictor}
    assert len(state.pipelines) == 250


def test_training_without_any_observed_cv_keeps_the_predictor() -> None:
    """Sparse traffic: no held-out stage has an arrival CV, so no baseline can be scored
    and the predictor in use must stay (it used to raise from select_predictor)."""
    from gateway_plugin.policies import chain as ch
    from gateway_plugin.policies.observation import PipelineObservation, StageObservation

    history = [
        PipelineObservation(f"p{k}", 1.0, float(t), tuple(
            StageObservation(f"p{k}-s{i}", 1, arrival_rate=0.1, service_time_s=0.05)
            for i in range(3)))
        for k in range(4) for t in range(30)
    ]
    samples = ch.samples_from_history(history)
    assert samples
    state = ch.QuartState(predictor="qna")
    new, _ = ch.with_trained_predictor(state, samples, epochs=2)
    assert new.predictor == "qna"
