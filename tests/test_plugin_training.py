"""One retraining function (gateway_plugin/training.py) for the live plugin and the
simulated Quart: same history in, same predictor and validation errors out."""
from __future__ import annotations

import pytest
import torch

from benchmark.systems.base import Bounds
from benchmark.systems.quart import QuartSystem
from gateway_plugin.controller import observation_json
from gateway_plugin.policies import chain
from gateway_plugin.training import MIN_SAMPLES, retrain
from tests.redis_env import RedisServer
from tests.test_plugin_gat import controller, simulated_history


@pytest.fixture
def rs(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def test_too_little_history_leaves_the_state_as_it_was():
    state = chain.QuartState()
    hist = simulated_history(1, seed=4)  # one pipeline, 6 samples: too few
    same, rnd = retrain(state, hist)
    assert same is state and not rnd.trained and rnd.pipelines == 1
    few = simulated_history(3, seed=4)[:5]
    same, rnd = retrain(state, few)
    assert same is state and not rnd.trained and rnd.samples < MIN_SAMPLES


def test_the_plugin_and_the_simulated_quart_learn_alike(rs):
    hist = simulated_history(12, seed=3)
    ctl = controller(rs)
    for o in hist:
        ctl.store.add_history(observation_json(o))
    torch.manual_seed(0)
    errors = ctl.train()
    assert errors is not None

    system = QuartSystem(Bounds(1, 20), train_every=1)
    torch.manual_seed(0)
    quart, info = system._train(chain.QuartState(), tuple(hist), 1, None)
    assert info is not None and info["samples"] == ctl.gat_meta["samples"]
    assert info["validation_mae"] == pytest.approx(errors)
    assert quart.predictor == ctl.state.predictor
    assert quart.gat_checkpoint == ctl.state.gat_checkpoint
