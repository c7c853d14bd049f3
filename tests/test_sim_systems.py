"""Real systems from the registry through the simulator, what they are shown, and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.results import summarize
from benchmark.sim import ClusterSpec, PipelineSpec, SimConfig, StageSpec, run
from benchmark.sim.__main__ import main as sim_main
from benchmark.systems.base import Bounds, Target
from benchmark.systems.registry import SYSTEMS
from benchmark.workloads import Arrivals, gamma, poisson, step
from tests.test_sim import BIG, Hold

PIPE = PipelineSpec("p", (StageSpec("p-0", 0.02, 0.3, replicas=1),
                          StageSpec("p-1", 0.05, 0.3, replicas=1)), slo_s=0.5)


class Recorder:
    """Delegates to a real system and keeps every Tick it was shown."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.name, self.period_s, self.scaleup = inner.name, inner.period_s, inner.scaleup
        self.ticks: list = []
        self.targets: list = []

    def initial_state(self):  # type: ignore[no-untyped-def]
        return self.inner.initial_state()

    def decide(self, tick, state):  # type: ignore[no-untyped-def]
        self.ticks.append(tick)
        out, state = self.inner.decide(tick, state)
        self.targets.append(out)
        return out, state


def test_quart_sees_what_prometheus_would_report() -> None:
    quart = Recorder(SYSTEMS["quart"](Bounds(1, 10), train_every=0))
    arr = poisson(20.0, 60.0, seed=1, target="p")
    res = run(arr, PIPE, quart, cluster=BIG, seed=3)
    assert res.ok.all()
    obs = [t.pipelines[0].stages for t in quart.ticks[4:]]  # windows full of samples
    rate = np.mean([s[0].arrival_rate for s in obs])
    assert rate == pytest.approx(20.0, rel=0.15)
    # service time from compute time: Server-Timing starts once the compute lock is taken
    # (functions/stage/server.py), so at rho 1.0 on stage 1 it is still the 50 ms mean
    svc1 = np.mean([s[1].service_time_s for s in obs])
    assert svc1 == pytest.approx(0.05, rel=0.1)
    # own latency: stage 0's gateway time minus stage 1's, floored at its compute time
    assert all(s[0].latency_mean_s is not None and s[0].latency_mean_s >= s[0].service_time_s
               for s in obs)
    assert all(s[1].latency_p99_s is not None for s in obs)
    cvs = [s[0].arrival_cv for s in obs if s[0].arrival_cv is not None]
    assert cvs and np.mean(cvs) == pytest.approx(1.0, abs=0.3)  # Poisson
    # in-flight and invocation counters are the gateway's, per stage and code
    assert set(quart.ticks[-1].in_flight) == {"p-0", "p-1"}
    assert quart.ticks[-1].invocations["p-1"]["200"] > 0
    assert res.timeline and {r.stage for r in res.timeline} == {"p-0", "p-1"}


def test_quart_scales_the_bottleneck_under_a_load_step() -> None:
    arr = step([(0.0, 5.0), (30.0, 40.0)], 120.0, seed=2, target="p")
    quart = Recorder(SYSTEMS["quart"](Bounds(1, 10), train_every=0))
    res = run(arr, PIPE, quart, cluster=BIG, seed=1)
    desired = {s: max(r.desired for r in res.timeline if r.stage == s) for s in ("p-0", "p-1")}
    # 40 rps x 50 ms = 2 Erlangs at stage 1: it needs more than one replica; stage 0 (0.8 E)
    # needs fewer
    assert desired["p-1"] >= 3 and desired["p-1"] > desired["p-0"]
    late = res.arrival_s > 90.0
    assert np.percentile(res.latency_s[late & res.ok], 99) < PIPE.slo_s
    assert res.extra["fork_start"] > 0 and res.actions["cold_start"] == 0


@pytest.mark.parametrize("name", ["openfaas-ce", "knative-kpa", "ray-serve",
                                  "openfaas-pro-rps"])
def test_baselines_run_through_the_same_interface(name: str) -> None:
    arr = gamma(30.0, 4.0, 60.0, seed=4, target="p")
    system = SYSTEMS[name](Bounds(1, 10))
    res = run(arr, PIPE, system, cluster=BIG, seed=1)
    row = summarize(res)
    assert row["scheduler_type"] == name and row["mode"] == "sim"
    assert row["total_requests"] == len(arr.times_s) and row["success_rate"] > 0.5
    assert row["replica_seconds"] > 0
    assert res.extra["unfinished"] == 0
    # 30 rps at 50 ms is 1.5 Erlangs on stage 1: every one of them scales it out
    assert max(r.desired for r in res.timeline if r.stage == "p-1") > 1


def test_static_plan_from_the_registry_holds_its_replicas() -> None:
    static = SYSTEMS["static"](Bounds(1, 10), plan={"p-0": 1, "p-1": 3})
    res = run(poisson(20.0, 30.0, seed=1, target="p"), PIPE, static, cluster=BIG, seed=1)
    last = {r.stage: r.replicas for r in res.timeline if r.t_s == res.timeline[-1].t_s}
    assert last == {"p-0": 1, "p-1": 3}
    assert res.actions["cold_start"] == 2  # static ships cold replicas


def test_cpu_target_caps_replica_speed() -> None:
    class Throttle(Hold):
        def decide(self, tick, state):  # type: ignore[no-untyped-def]
            return {"p-0": Target(1, cpu=0.5)}, state

    times = np.arange(20) * 1.0 + 10.0
    arr = Arrivals(times, np.zeros(20, dtype=np.int32), ("p",), {"duration_s": 30.0})
    pipe = PipelineSpec("p", (StageSpec("p-0", 0.1, 0.0, "deterministic"),), 1.0)
    res = run(arr, pipe, Throttle(), cluster=BIG)
    assert np.allclose(res.latency_s, 0.2)  # half a core: twice the compute time
    assert {r.cpu for r in res.timeline} == {0.5}


def test_cli_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--systems", "openfaas-ce", "--duration", "20", "--rps", "5",
                     "--fail-at", "10:node"]) == 0
    out = capsys.readouterr().out
    assert "openfaas-ce" in out and "p99" in out and "events/s" in out


ARR = poisson(5.0, 5.0, seed=1, target="p")


@pytest.mark.parametrize("call, message", [
    (lambda: run(ARR, PIPE, Hold(), cluster=BIG, fail_at=[(1.0, "disk", "x")]),
     "failure kind"),
    (lambda: run(ARR, PIPE, Hold(), cluster=BIG, fail_at=[(1.0, "node", "nope")]),
     "unknown node"),
    (lambda: run(ARR, PIPE, Hold(), cluster=BIG, fail_at=["soon:node"]), "not a number"),
    (lambda: run(poisson(5.0, 5.0, target="q"), PIPE, Hold(), cluster=BIG), "match no pipeline"),
    (lambda: run(ARR, PIPE, object(), cluster=BIG), "lacks"),
    (lambda: run(ARR, [PIPE, PIPE], Hold(), cluster=BIG), "unique"),
    (lambda: run(ARR, PIPE, Hold(scaleup="warp")), "scaleup"),
    (lambda: run(ARR, PIPE, Hold(want={"zz": 1}), cluster=BIG), "unknown stage"),
    (lambda: run(ARR, PIPE, Hold(), cluster=ClusterSpec.uniform(1, 0.5, 1)),
     "cannot hold the initial replicas"),
    (lambda: run(ARR, PIPE, Hold(), slo_s=-1.0), "slo_s"),
    (lambda: run({"times_s": [1.0]}, PIPE, Hold()), "times_s, target and targets"),
    (lambda: StageSpec("s", -0.1), "service_mean_s"),
    (lambda: StageSpec("s", 0.1, 0.0, "lognormal"), "needs service_cv > 0"),
    (lambda: StageSpec("s", 0.1, 0.5, "weibull"), "dist must be one of"),
    (lambda: StageSpec("s", 0.1, max_inflight=0), "max_inflight"),
    (lambda: PipelineSpec("p", (), 1.0), "at least one stage"),
    (lambda: PipelineSpec("p", PIPE.stages, 1.0, edges=(("p-0", "p-1"), ("p-1", "p-0"))),
     "cycle"),
    (lambda: PipelineSpec("p", PIPE.stages + (StageSpec("p-2", 0.1, 0.1),), 1.0,
                          edges=(("p-0", "p-1"), ("p-0", "p-2"))), "single chain"),
    (lambda: ClusterSpec.uniform(2, 8.0, 2, placement="random"), "placement"),
    (lambda: SimConfig(scrape_s=0.0), "scrape_s"),
])
def test_bad_input_is_a_clear_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_edges_reorder_a_chain() -> None:
    a, b = StageSpec("a", 0.01, 0.1), StageSpec("b", 0.01, 0.1)
    p = PipelineSpec("p", (a, b), 1.0, edges=(("b", "a"),))
    assert [s.name for s in p.stages] == ["b", "a"]
