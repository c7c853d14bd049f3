"""Online GAT training through the plugin: history in real Redis -> trained predictor ->
checkpoint in Redis -> restored by a new plugin process state, predicting the same."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.basic_auth import BasicAuth
from gateway_plugin.actuate import Gateway
from gateway_plugin.app import create_app
from gateway_plugin.config import PluginConfig
from gateway_plugin.controller import Controller, observation_json
from gateway_plugin.metrics_in import PrometheusReader
from gateway_plugin.pacing import Triggers
from gateway_plugin.policies import chain, pipeline_sim
from gateway_plugin.policies.observation import PipelineObservation, StageObservation
from gateway_plugin.store import Store
from tests.redis_env import RedisServer


def simulated_history(n_pipelines: int, seed: int) -> list[PipelineObservation]:
    """What the control loop would have stored: per-period observations of random chains."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_pipelines):
        n = int(rng.integers(2, 5))
        lam = float(rng.uniform(5, 20))
        cv0 = float(np.exp(rng.uniform(np.log(0.5), np.log(4.0))))
        specs = [pipeline_sim.StageSpec(float(rng.uniform(0.3, 0.9)) * c / lam,
                                        float(rng.uniform(0.2, 1.5)), c)
                 for c in rng.integers(1, 5, size=n).tolist()]
        periods = 7
        obs = pipeline_sim.simulate_pipeline(specs, [lam] * periods,
                                             np.clip(cv0 * np.exp(rng.normal(0, 0.1, periods)),
                                                     0.3, 4).tolist(), 20.0, g + seed)
        for k in range(periods):
            stages = []
            for i, spec in enumerate(specs):
                rate, acv, dcv, smean, scv, reps, _util = obs[k, i].tolist()
                def f(x):
                    return None if not np.isfinite(x) else float(x)
                stages.append(StageObservation(f"s{i}", spec.replicas, f(rate), f(smean) or None,
                                               f(scv), arrival_cv=f(acv), departure_cv=f(dcv)))
            out.append(PipelineObservation(f"p{g}", 2.0, 20.0 * k, tuple(stages)))
    return out


@pytest.fixture
def rs(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def controller(rs) -> Controller:
    # the gateway and Prometheus are not contacted for training and restoring
    cfg = PluginConfig(redis_url=rs.url)
    return Controller(cfg, Gateway("http://127.0.0.1:9", None), PrometheusReader(
        "http://127.0.0.1:9"), Store(rs.url))


def test_training_from_redis_history_and_checkpoint_survives_restart(rs):
    torch.manual_seed(0)
    ctl = controller(rs)
    assert ctl.train() is None  # no history yet: nothing to learn from, said so
    for o in simulated_history(40, seed=1):
        ctl.store.add_history(observation_json(o))
    errors = ctl.train()
    assert errors is not None and set(errors) >= {"gat", "copy_upstream", "qna"}
    assert errors["gat"] < errors["copy_upstream"]  # bursty inputs: copying is far off
    assert ctl.state.gat_checkpoint and ctl.gat_meta["samples"] > 100
    ctl.store.save_state(ctl._state_doc(), ctl.state.gat_checkpoint, ctl.gat_meta)

    again = controller(rs)  # a restarted plugin
    assert again.state.gat_checkpoint == ctl.state.gat_checkpoint
    assert again.state.predictor == ctl.state.predictor
    assert again.gat_meta["validation_mae"] == pytest.approx(errors)
    # every validated round is kept with the state and read at GET /predictor
    (first,) = again.gat_meta["rounds"]
    assert first["predictor"] == ctl.state.predictor
    assert first["validation_mae"] == pytest.approx(errors)
    assert again.train() is not None
    auth = BasicAuth("admin", "pw")
    client = create_app(again, Triggers(), auth=auth).test_client()
    assert client.get("/predictor").status_code == 401
    doc = client.get("/predictor", headers={"Authorization": auth.header()}).json
    assert doc["predictor"] == again.state.predictor and len(doc["rounds"]) == 2
    assert doc["rounds"][0]["trained_at"] <= doc["rounds"][1]["trained_at"]
    probe = simulated_history(3, seed=99)
    forced = chain.QuartState(predictor="gat", gat_checkpoint=again.state.gat_checkpoint)
    d1, _ = chain.decide(probe, forced, chain.QuartConfig())
    d2, _ = chain.decide(probe, chain.QuartState(predictor="gat",
                                                  gat_checkpoint=ctl.state.gat_checkpoint),
                         chain.QuartConfig())
    assert [x.predicted_cv for v in d1.values() for x in v] == \
        [x.predicted_cv for v in d2.values() for x in v]
    assert {x.predictor for v in d1.values() for x in v} == {"gat"}


def test_the_corrector_judges_burstiness_by_the_window_the_rates_were_read_over(rs):
    # the period's window (2 x 5 s) until the reader says it read over another one: with
    # a 5 s scrape and a 1 s period it widens 4 s to 10 s (test_plugin_rate_window.py)
    ctl = controller(rs)
    assert ctl.qcfg.corrector.rate_window_s == 10.0
    ctl._rate_window(12.0)
    assert ctl.qcfg.corrector.rate_window_s == 12.0
    assert ctl.qcfg.corrector.max_replicas == ctl.cfg.max_replicas  # the rest kept
    ctl._rate_window(0.0)  # nothing read yet: left alone
    assert ctl.qcfg.corrector.rate_window_s == 12.0
