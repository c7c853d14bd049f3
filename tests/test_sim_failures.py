"""Failures, recovery time, draining and the gateway's queue limits in the simulator."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.sim import ClusterSpec, PipelineSpec, SimConfig, StageSpec, run
from benchmark.sim.recovery import recovery_times
from benchmark.sim.spec import Failure, parse_failures
from benchmark.workloads import Arrivals, poisson
from tests.test_sim import BIG, Hold


def _pipe(stages: int, replicas: int, mean_s: float = 0.04, **kw) -> PipelineSpec:  # type: ignore[no-untyped-def]
    return PipelineSpec("p", tuple(StageSpec(f"p-{k}", mean_s, 0.3, replicas=replicas, **kw)
                                   for k in range(stages)), slo_s=0.5)


def _node_failure(scaleup: str):  # type: ignore[no-untyped-def]
    arr = poisson(40.0, 30.0, seed=7, target="p")
    return run(arr, _pipe(2, 2), Hold(scaleup), cluster=ClusterSpec.uniform(2, 16.0, 4),
               seed=1, fail_at=[(10.0, "node", "node-0")])


def test_node_failure_fails_calls_and_recovers() -> None:
    fork, cold = _node_failure("fork"), _node_failure("cold")
    for res in (fork, cold):
        assert res.extra["rejected"]["502"] > 0 and (~res.ok).sum() > 0
        assert res.extra["unfinished"] == 0
        assert len(res.recovery_s) == 1 and math.isfinite(res.recovery_s[0])
        before = res.arrival_s < 9.0
        assert res.ok[before].all()  # nothing failed before the node did
    # replacements: forked on the surviving node (it holds both zygotes) vs started cold
    assert fork.extra["fork_start"] == 2 and fork.actions["cold_start"] == 0
    assert cold.actions["cold_start"] == 2
    # ~2.5 s of one replica per stage at 1.6 Erlangs each: the cold platform recovers later
    assert cold.recovery_s[0] > fork.recovery_s[0]
    assert cold.recovery_s[0] >= 2.0


def test_replica_failure_in_a_pipeline_resolves_every_request() -> None:
    # kill a stage-0 replica (calls waiting downstream fail, the work goes on as orphans)
    # and later a stage-2 replica (its calls fail back up through stages 1 and 0)
    arr = poisson(30.0, 20.0, seed=3, target="p")
    res = run(arr, _pipe(3, 2), Hold(), cluster=BIG, seed=2,
              fail_at=[(5.0, "replica", "p-0"), (12.0, "replica", "p-2")])
    assert res.extra["unfinished"] == 0
    failed = int((~res.ok).sum())
    assert failed == res.extra["rejected"]["502"] > 0
    assert np.isnan(res.latency_s[~res.ok]).all() and np.isfinite(res.latency_s[res.ok]).all()
    assert len(res.recovery_s) == 2
    # failed calls are those in flight at 5 s or 12 s
    t = res.arrival_s[~res.ok]
    assert np.all(((t > 4.0) & (t <= 5.0)) | ((t > 11.0) & (t <= 12.0)))


def test_failure_without_target_hits_the_busiest() -> None:
    arr = poisson(30.0, 10.0, seed=3, target="p")
    res = run(arr, _pipe(2, 1), Hold(), cluster=ClusterSpec.uniform(3, 16.0, 4), seed=2,
              fail_at=["5:node", (6.0, "replica")])
    assert res.extra["rejected"]["502"] > 0 and res.extra["unfinished"] == 0
    assert parse_failures(["5:node"]) == (Failure(5.0, "node", None),)


def test_scale_down_drains_in_flight_work() -> None:
    # 3 replicas, each holding calls of 0.5 s; the system asks for 1 at t = 1.5 s
    times = np.linspace(0.0, 1.5, 12)
    arr = Arrivals(times, np.zeros(12, dtype=np.int32), ("p",), {"duration_s": 2.0})
    pipe = PipelineSpec("p", (StageSpec("p-0", 0.5, 0.0, "deterministic", replicas=3),), 5.0)
    res = run(arr, pipe, Hold(want={"p-0": 1}), cluster=BIG)
    assert res.ok.all() and res.extra["rejected"]["502"] == 0
    assert [r.replicas for r in res.timeline][-1] == 1


def test_drain_timeout_kills_a_busy_replica() -> None:
    times = np.zeros(16)
    arr = Arrivals(times, np.zeros(16, dtype=np.int32), ("p",), {"duration_s": 1.0})
    pipe = PipelineSpec("p", (StageSpec("p-0", 1.0, 0.0, "deterministic", replicas=2),), 30.0)
    res = run(arr, pipe, Hold(want={"p-0": 1}), cluster=BIG,
              config=SimConfig(drain_timeout_s=2.0))
    # each replica holds 8 calls of 1 s; the drained one is killed 2 s into its drain
    assert 0 < res.extra["rejected"]["502"] < 8
    assert res.ok.sum() == 16 - res.extra["rejected"]["502"]


def test_queue_full_is_429_and_queue_timeout_is_504() -> None:
    arr = Arrivals(np.zeros(10), np.zeros(10, dtype=np.int32), ("p",), {"duration_s": 1.0})
    pipe = PipelineSpec("p", (StageSpec("p-0", 0.1, 0.0, "deterministic", max_inflight=1),), 5.0)
    res = run(arr, pipe, Hold(), cluster=BIG, config=SimConfig(queue_size=2))
    assert res.extra["rejected"]["429"] == 7 and res.ok.sum() == 3
    assert np.allclose(np.sort(res.latency_s[res.ok]), [0.1, 0.2, 0.3])
    none = PipelineSpec("p", (StageSpec("p-0", 0.1, 0.0, "deterministic", replicas=0),), 5.0)
    res = run(arr, none, Hold(), cluster=BIG, config=SimConfig(queue_timeout_s=1.0))
    assert res.extra["rejected"]["504"] == 10 and not res.ok.any()


def test_recovery_time_by_hand() -> None:
    # 10 requests/s for 20 s at 100 ms; those arriving in [5, 8) fail.  Windows of 10 s
    # start at 5, 5.5, ...: [7.5, 17.5) still holds 5 failures (p99 = inf); [8, 18) holds
    # none: recovered 3 s after the failure
    t = np.arange(200) / 10.0
    ok = ~((t >= 5.0) & (t < 8.0))
    lat = np.where(ok, 0.1, np.nan)
    assert recovery_times(t, lat, ok, [5.0], slo_s=0.5) == [pytest.approx(3.0)]
    # a failure that never hurt: 0; one that never recovered: inf
    assert recovery_times(t, np.full(200, 0.1), np.ones(200, bool), [5.0], 0.5) == [0.0]
    assert recovery_times(t, lat, t < 5.0, [5.0], 0.5) == [math.inf]
