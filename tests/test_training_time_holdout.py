"""A user with one pipeline gets the GAT too: with a single pipeline nothing can be held
out whole, so training validates on that pipeline's later windows (held out by time).

Real training (a small GAT, few epochs) on observations from the seeded pipeline
simulator; no mocks.
"""
from __future__ import annotations

import math

import numpy as np

from benchmark.systems.base import Bounds
from benchmark.systems.quart import QuartSystem
from gateway_plugin.policies import chain, cv_predict, pipeline_sim
from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from gateway_plugin.training import retrain


def one_pipeline_history(periods: int, seed: int = 5) -> list[PipelineObservation]:
    """What the control loop stores for one 3-stage chain over ``periods`` periods of 20 s."""
    rng = np.random.default_rng(seed)
    lam = 10.0
    specs = [pipeline_sim.StageSpec(0.6 * c / lam, 0.8, c) for c in (1, 2, 3)]
    cvs = np.clip(2.0 * np.exp(np.cumsum(rng.normal(0, 0.2, periods))), 0.3, 6).tolist()
    obs = pipeline_sim.simulate_pipeline(specs, [lam] * periods, cvs, 20.0, seed)
    out = []
    for k in range(periods):
        stages = []
        for i, spec in enumerate(specs):
            rate, acv, dcv, smean, scv, _reps, _util = obs[k, i].tolist()
            stages.append(StageObservation(
                f"s{i}", spec.replicas, _num(rate), _num(smean), _num(scv),
                arrival_cv=_num(acv), departure_cv=_num(dcv)))
        out.append(PipelineObservation("only", 2.0, 20.0 * k, tuple(stages)))
    return out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) and x > 0 else None


def test_a_lone_pipeline_is_trained_and_validated_on_its_later_windows():
    hist = one_pipeline_history(60)
    state, rnd = retrain(chain.QuartState(), hist, min_samples=40, epochs=30)
    assert rnd.trained and rnd.pipelines == 1 and rnd.holdout == "time"
    assert rnd.errors is not None and math.isfinite(rnd.errors["gat"])
    assert math.isfinite(rnd.errors["qna"])
    assert state.gat_checkpoint is not None  # a GAT was trained, whichever predictor won
    assert state.predictor in {"gat", *cv_predict.BASELINES}
    assert "validation MAE" in state.predictor_reason


def test_the_validation_windows_are_the_later_ones_and_never_trained_on():
    samples = chain.samples_from_history(one_pipeline_history(60))
    result = cv_predict.train(cv_predict.CVGAT(hidden=4, heads=1, seed=0), samples, epochs=5)
    assert result.holdout == "time"
    val_t = [s.t_s for s in result.val_samples]
    train_t = [s.t_s for s in cv_predict.split_groups(samples, 0.25, 0)[0]]
    assert len(val_t) == round(len(samples) * 0.25)
    # a gap of one window: the last training target is not a validation feature
    assert max(train_t) + 20.0 < min(val_t)
    assert max(val_t) == max(s.t_s for s in samples)
    assert len(train_t) + len(val_t) == len(samples) - 1


def test_the_simulated_quart_trains_on_one_pipeline():
    system = QuartSystem(Bounds(1, 20), train_every=1, train_epochs=20, min_samples=40)
    quart, info = system._train(chain.QuartState(), tuple(one_pipeline_history(50)), 1, None)
    assert info is not None and info["holdout"] == "time" and info["pipelines"] == 1
    assert set(info["validation_mae"]) >= {"gat", "qna"}
    assert quart.gat_checkpoint is not None


def test_the_qna_ablation_never_trains():
    from benchmark.systems.registry import SYSTEMS

    assert SYSTEMS["quart-qna"](Bounds(1, 20)).trains is False
    assert SYSTEMS["quart"](Bounds(1, 20)).trains is True
