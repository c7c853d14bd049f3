"""GAT training off the control cycle (gateway_plugin/trainer.py) and a cycle's writes in
one Redis round trip, on the replayed inputs of the control-cycle benchmark and a real
redis-server."""
from __future__ import annotations

import time

import numpy as np
import pytest

from benchmark.studies import cycle_inputs
from tests.redis_env import RedisServer

PIPES, SPP = 12, 4


@pytest.fixture
def rs(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def recorded(cycles: int):
    rng = np.random.default_rng(3)
    bodies, svc = cycle_inputs.function_bodies(PIPES, SPP, rng)
    return bodies, cycle_inputs.record_prometheus(svc, cycles, rng)


def test_a_cycle_never_waits_for_training_and_adopts_the_round_whole(rs):
    bodies, prom = recorded(12)
    rp = cycle_inputs.replay(bodies, prom, rs.url, "qna", train_every=6,
                             train_background=True)
    ctl = rp.ctl
    try:
        for _ in range(6):  # the 6th cycle starts a round on 6 periods of 12 pipelines
            rp.step()
        assert ctl.trainer is not None and ctl.trainer.busy
        before = ctl.state.gat_checkpoint
        t0 = time.perf_counter()
        out = rp.step()  # the round is still running (a spawned process importing torch)
        assert time.perf_counter() - t0 < 1.0 and ctl.trainer.busy
        assert ctl.state.gat_checkpoint == before and ctl.gat_meta is None
        assert {d["predictor"] for d in out["decisions"]} == {"qna"}
        assert ctl.trainer.wait(120)
        out = rp.step()  # adopted at this cycle's start: predictor and checkpoint together
        assert ctl.gat_meta is not None and ctl.gat_meta["samples"] >= 40
        assert ctl.state.gat_checkpoint is not None and ctl.state.gat_checkpoint != before
        assert {d["predictor"] for d in out["decisions"]} == {ctl.state.predictor}
        assert ctl.store.load_state()[1] == ctl.state.gat_checkpoint  # saved with the state
    finally:
        ctl.close()


def test_inline_training_still_trains_within_the_cycle(rs):
    bodies, prom = recorded(6)
    rp = cycle_inputs.replay(bodies, prom, rs.url, "qna", train_every=6,
                             train_background=False)
    for _ in range(6):
        rp.step()
    assert rp.ctl.trainer is None and rp.ctl.gat_meta is not None
    assert rp.ctl.store.load_state()[1] == rp.ctl.state.gat_checkpoint


def test_a_cycle_writes_history_state_and_decisions_in_one_transaction(rs):
    bodies, prom = recorded(3)
    rp = cycle_inputs.replay(bodies, prom, rs.url, "qna")
    rp.step()
    r = rs.client()
    r.config_resetstat()
    rp.step()
    stats = r.info("commandstats")
    assert stats["cmdstat_exec"]["calls"] == 1, stats  # main: 2 MULTI/EXEC + a pipeline
    assert stats["cmdstat_xadd"]["calls"] == 1 and stats["cmdstat_rpush"]["calls"] == 1
    assert r.llen("quart:history") == 2 * PIPES and r.xlen("quart:decisions") == 2
