"""The simulator against queueing theory, processor sharing, spawn tiers and determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.sim import ClusterSpec, PipelineSpec, SimConfig, StageSpec, run
from benchmark.sim.prom import bucket_quantile, extrapolated_increase
from benchmark.systems.base import Target
from benchmark.workloads import Arrivals, poisson
from gateway_plugin.policies.mmc import mmc_stage_delay


class Hold:
    """A system that never changes anything (fixed replicas), or asks once for ``want``."""

    def __init__(self, scaleup: str = "fork", period_s: float = 1.0,
                 want: dict[str, int] | None = None) -> None:
        self.name, self.scaleup, self.period_s, self.want = "hold", scaleup, period_s, want or {}

    def initial_state(self) -> int:
        return 0

    def decide(self, tick, state):  # type: ignore[no-untyped-def]
        return {k: Target(v) for k, v in self.want.items()}, state + 1


def one_stage(mean_s: float, replicas: int, dist: str = "exponential", cv: float = 1.0,
              max_inflight: int = 1, name: str = "p", cpu: float | None = None) -> PipelineSpec:
    return PipelineSpec(name, (StageSpec(f"{name}-s0", mean_s, cv, dist, replicas=replicas,
                                         max_inflight=max_inflight, cpu=cpu),), slo_s=1.0)


BIG = ClusterSpec.uniform(1, 64.0, 64)


@pytest.mark.parametrize("servers", [1, 3])
def test_mmc_mean_sojourn_matches_erlang_c(servers: int) -> None:
    # rho = 0.7; max_inflight 1 makes the gateway's FIFO queue the only queue: an M/M/c
    mu = 10.0
    lam = 0.7 * servers * mu
    arr = poisson(lam, 60_000 / lam, seed=3, target="p")
    quiet = SimConfig(timeline=False, scrape_s=600.0)  # nobody decides: skip the metrics
    res = run(arr, one_stage(1 / mu, servers), Hold(period_s=600.0), cluster=BIG, seed=4,
              config=quiet)
    assert res.ok.all()
    expected = mmc_stage_delay(lam, mu, servers)  # M/M/1: 1/(mu - lam) = 0.333 s
    got = float(res.latency_s.mean())
    assert got == pytest.approx(expected, rel=0.05), (got, expected)


def test_deterministic_service_has_no_wait_below_capacity() -> None:
    # D/D/1 at rho 0.5: every request takes exactly its service time
    times = np.arange(200) * 0.2
    arr = Arrivals(times, np.zeros(200, dtype=np.int32), ("p",), {"duration_s": 40.0})
    res = run(arr, one_stage(0.1, 1, "deterministic", 0.0), Hold(), cluster=BIG)
    assert np.allclose(res.latency_s, 0.1)


def _two_at_once(cores: float, cpus: tuple[float | None, float | None]) -> np.ndarray:
    times = np.array([1.0, 1.0])
    arr = Arrivals(times, np.array([0, 1], dtype=np.int32), ("a", "b"), {"duration_s": 2.0})
    pipes = [one_stage(0.1, 1, "deterministic", 0.0, name="a", cpu=cpus[0]),
             one_stage(0.1, 1, "deterministic", 0.0, name="b", cpu=cpus[1])]
    res = run(arr, pipes, Hold(), cluster=ClusterSpec.uniform(1, 64.0, cores))
    return res.latency_s


def test_processor_sharing_slows_an_oversubscribed_node() -> None:
    # two replicas computing 0.1 core-s each: 2 cores -> 0.1 s; 1 core shared -> both 0.2 s
    assert np.allclose(_two_at_once(2.0, (None, None)), [0.1, 0.1])
    assert np.allclose(_two_at_once(1.0, (None, None)), [0.2, 0.2])
    # a 0.25-core limit: that replica runs at 0.25 (0.4 s); the other gets the remaining
    # 0.75 core (0.1333 s), then the whole core stays capped at 0.25 for the first
    lat = _two_at_once(1.0, (0.25, None))
    assert lat[1] == pytest.approx(0.1 / 0.75)
    assert lat[0] == pytest.approx(0.4)


def test_background_threads_take_their_share_of_the_cores() -> None:
    # one always-runnable thread of another program on a 1-core node: a lone request gets
    # half the core (0.2 s); two requests and the thread get a third each (0.3 s)
    pipe = one_stage(0.1, 1, "deterministic", 0.0)
    one = Arrivals(np.array([1.0]), np.zeros(1, dtype=np.int32), ("p",), {"duration_s": 2.0})
    shared = ClusterSpec.uniform(1, 64.0, 1.0, background=1.0)
    assert run(one, pipe, Hold(), cluster=shared).latency_s[0] == pytest.approx(0.2)
    two = [one_stage(0.1, 1, "deterministic", 0.0, name=n) for n in ("a", "b")]
    arr = Arrivals(np.array([1.0, 1.0]), np.array([0, 1], dtype=np.int32), ("a", "b"),
                   {"duration_s": 2.0})
    assert np.allclose(run(arr, two, Hold(), cluster=shared).latency_s, 0.3)
    # a replayed trace: the thread appears at t = 1 s; a 0.2 core-s request from t = 0.9 s
    # runs alone for 0.1 s, then at half speed for the other 0.1 core-s: done at 1.2 s
    late = Arrivals(np.array([0.9]), np.zeros(1, dtype=np.int32), ("p",), {"duration_s": 2.0})
    traced = ClusterSpec.uniform(1, 64.0, 1.0, background=((0.0, 0.0), (1.0, 1.0)))
    res = run(late, one_stage(0.2, 1, "deterministic", 0.0), Hold(), cluster=traced)
    assert res.latency_s[0] == pytest.approx(0.3)


def test_sampler_counts_runnable_threads_of_other_programs() -> None:
    import os
    import threading
    import time

    from benchmark.sim.background import RunnableSampler, runnable_threads

    assert runnable_threads([os.getpid()]) >= 1  # this thread, reading
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:  # the spinning thread is not a "replica": it is background
        bg = RunnableSampler(list, interval_s=0.02).start()
        time.sleep(0.3)
        load = bg.stop()
    finally:
        stop.set()
        t.join()
    assert load.samples >= 5 and load.replicas == 0 and load.mean > 0.3


def test_hop_cpu_is_one_gateway_thread_on_its_node() -> None:
    # 50 ms of gateway CPU before a 100 ms compute, two requests at once, 2 cores:
    # the gateway proxies one after the other (done at 0.05 and 0.1 s), the computes
    # then run on their own cores: 0.15 and 0.2 s.  Without a gateway node the hop is
    # 50 ms of delay: 0.15 s each
    pipes = [PipelineSpec(n, (StageSpec(f"{n}-s0", 0.1, hop_cpu_s=0.05),), 1.0)
             for n in ("a", "b")]
    arr = Arrivals(np.array([1.0, 1.0]), np.array([0, 1], dtype=np.int32), ("a", "b"),
                   {"duration_s": 2.0})
    two = ClusterSpec.uniform(1, 64.0, 2.0)
    on_node = run(arr, pipes, Hold(), cluster=two, config=SimConfig(gateway_node="node-0"))
    assert np.allclose(np.sort(on_node.latency_s), [0.15, 0.2])
    assert np.allclose(run(arr, pipes, Hold(), cluster=two).latency_s, 0.15)
    # one core: hop a alone to 1.05; a's compute and hop b share it (half speed each) until
    # hop b ends at 1.15 (a has 0.05 left); the two computes share it until a ends at 1.25;
    # b's last 0.05 runs alone: 1.30.  Latencies 0.25 and 0.3
    one = ClusterSpec.uniform(1, 64.0, 1.0)
    lat = run(arr, pipes, Hold(), cluster=one, config=SimConfig(gateway_node="node-0")).latency_s
    assert np.allclose(np.sort(lat), [0.25, 0.3])


def test_requests_queue_behind_the_compute_lock_of_one_replica() -> None:
    # three calls at once to one replica with 8 slots: served one after another
    arr = Arrivals(np.zeros(3), np.zeros(3, dtype=np.int32), ("p",), {"duration_s": 1.0})
    res = run(arr, one_stage(0.1, 1, "deterministic", 0.0, max_inflight=8), Hold(), cluster=BIG)
    assert np.allclose(np.sort(res.latency_s), [0.1, 0.2, 0.3])


def _ready_after(scaleup: str) -> tuple[list[int], dict]:
    arr = poisson(5.0, 8.0, seed=1, target="p")
    sysm = Hold(scaleup, period_s=1.0, want={"p-s0": 2})
    res = run(arr, one_stage(0.01, 1, "deterministic", 0.0), sysm, cluster=BIG, seed=2)
    ready = [r.replicas for r in sorted(res.timeline, key=lambda r: r.t_s)]
    return ready, res.actions | {"fork": res.extra["fork_start"]}


def test_spawn_tier_sets_time_to_ready() -> None:
    # the system asks for 2 at t = 1.5 s; rows are taken right after each decision
    fork, fork_actions = _ready_after("fork")
    cold, cold_actions = _ready_after("cold")
    # a fork (T0, ~36 ms) is ready by the next period; a cold start (~2.5 s) is not
    assert fork[1] == 2 and cold[1] == 1
    assert cold[4] == 2  # 4 s after the request: well past the cold p95 (2.98 s)
    assert fork_actions["fork"] == 1 and fork_actions["cold_start"] == 0
    assert cold_actions["cold_start"] == 1 and cold_actions["fork"] == 0


def test_same_seed_same_result_and_seed_matters() -> None:
    arr = poisson(30.0, 20.0, seed=5, target="p")
    pipe = PipelineSpec("p", (StageSpec("p-0", 0.02, 0.5), StageSpec("p-1", 0.03, 0.5)), 0.5)

    def go(seed: int):  # type: ignore[no-untyped-def]
        return run(arr, pipe, Hold(want={"p-1": 2}), cluster=BIG, seed=seed)

    a, b, c = go(1), go(1), go(2)
    assert np.array_equal(a.latency_s, b.latency_s) and np.array_equal(a.ok, b.ok)
    assert a.timeline == b.timeline and a.actions == b.actions
    assert not np.array_equal(a.latency_s, c.latency_s)


def test_pipeline_latency_is_the_sum_of_stages_and_hops() -> None:
    arr = Arrivals(np.array([0.0, 5.0]), np.zeros(2, dtype=np.int32), ("p",),
                   {"duration_s": 6.0})
    pipe = PipelineSpec("p", tuple(StageSpec(f"p-{k}", 0.01 * (k + 1), 0.0, "deterministic",
                                             hop_s=0.002) for k in range(3)), 0.5)
    res = run(arr, pipe, Hold(), cluster=BIG)
    # compute 10 + 20 + 30 ms, three hops of 2 ms; the first call of a pre-deployed replica
    # pays nothing extra
    assert np.allclose(res.latency_s, 0.066)


def test_prometheus_rate_extrapolates_like_promql() -> None:
    # samples at 0, 5, 10 of a counter 0 -> 10 -> 20; rate(x[10s]) at t = 10: the first
    # sample sits on the window's start, the last on its end: 20 / 10 s = 2/s
    t = np.array([0.0, 5.0, 10.0])
    v = np.array([[0.0], [10.0], [20.0]])
    inc, ok = extrapolated_increase(t, v, v > -1, 10.0, 10.0)
    assert ok[0] and inc[0] == pytest.approx(20.0)
    # evaluated at 12.5 the window [2.5, 12.5] holds the samples at 5 and 10: an increase of
    # 10 over 5 s; both edges are 2.5 s away (< 1.1 x the 5 s spacing), so it is extrapolated
    # to the whole 10 s window: 10 * 10 / 5 = 20
    inc, ok = extrapolated_increase(t, v, v > -1, 12.5, 10.0)
    assert inc[0] == pytest.approx(20.0)
    # a series born at the last scrape has one sample: no value
    p = np.array([[False], [False], [True]])
    _, ok = extrapolated_increase(t, v, p, 10.0, 10.0)
    assert not ok[0]


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    # 100 observations: 50 in (0, 5 ms], 49 in (5, 10 ms], 1 in (1, 2.5 s]
    cum = np.zeros((1, 12))
    cum[0, 0] = 50
    cum[0, 1:] = 99
    cum[0, 8:] = 100
    # rank 99 reaches bucket le=0.01: 0.005 + 0.005 * (99 - 50) / 49 = 0.01
    assert bucket_quantile(0.99, cum)[0] == pytest.approx(0.01)
    # p50: rank 50 in the first bucket: 0 + 0.005 * 50 / 50
    assert bucket_quantile(0.5, cum)[0] == pytest.approx(0.005)
    assert math.isnan(bucket_quantile(0.99, np.zeros((1, 12)))[0])
