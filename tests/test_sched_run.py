"""benchmark.studies.sched.run end to end: the simpy cluster under both schedulers.

Workloads are numpy gamma arrivals built here (shape 1/CV^2, as benchmark.workloads),
so these tests do not depend on the workload module's file format.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from benchmark.results import summarize
from benchmark.studies.sched import GossipParams, SchedConfig, run
from benchmark.studies.sched.__main__ import convergence_table, main, parse_mix


@dataclass
class Arr:
    times_s: np.ndarray
    target: np.ndarray
    targets: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def gamma_arrivals(rps: float, cv: float, duration_s: float, targets: dict[str, float],
                   seed: int = 0) -> Arr:
    rng = np.random.default_rng(seed)
    times, idx = [], []
    for i, share in enumerate(targets.values()):
        k = 1.0 / cv ** 2
        gaps = rng.gamma(k, 1.0 / (rps * share * k), int(rps * share * duration_s * 3) + 50)
        t = np.cumsum(gaps)
        t = t[t < duration_s]
        times.append(t)
        idx.append(np.full(len(t), i))
    ts, ix = np.concatenate(times), np.concatenate(idx)
    order = np.argsort(ts, kind="stable")
    return Arr(ts[order], ix[order], tuple(targets),
               {"name": f"test-gamma-cv{cv}", "duration_s": duration_s, "seed": seed})


MIX = {"minilm-stage-0": 0.35, "minilm-stage-1": 0.35, "bert-large-stage-0": 0.15,
       "bert-large-stage-1": 0.15}


@pytest.fixture(scope="module")
def steady() -> Arr:
    return gamma_arrivals(4.0, 1.0, 90.0, MIX, seed=3)


@pytest.fixture(scope="module")
def failed(steady: Arr) -> dict[str, Any]:
    """Both schedulers, node-0 (the coordinator's host) killed at 30 s."""
    return {s: run(steady, s, nodes=3, slo_s=1.0, fail_at=30.0, seed=1) for s in
            ("central", "gossip")}


def test_same_seed_same_result_and_another_seed_differs(steady: Arr):
    for s in ("central", "gossip"):
        a, b = run(steady, s, seed=5), run(steady, s, seed=5)
        assert np.array_equal(a.latency_s, b.latency_s, equal_nan=True)
        assert a.actions == b.actions and a.timeline == b.timeline
        c = run(steady, s, seed=6)
        assert not np.array_equal(a.latency_s, c.latency_s, equal_nan=True)


def test_action_counts_add_up_to_the_requests(steady: Arr, failed: dict[str, Any]):
    bursty = gamma_arrivals(5.0, 8.0, 60.0, MIX, seed=4)
    for s in ("central", "gossip"):
        r = run(bursty, s, seed=2)
        assert sum(r.actions.values()) == len(bursty.times_s)
        assert set(r.actions) == {"serve", "cold_start", "migrate"}
        assert sum(failed[s].actions.values()) == len(steady.times_s)
    # gossip's random entry node makes it forward; the coordinator moves queued work only
    assert run(bursty, "gossip", seed=2).actions["migrate"] > 0


def test_full_information_and_no_delay_serves_a_warm_model():
    arr = Arr(np.arange(0.0, 20.0, 0.5), np.zeros(40, dtype=int), ("bert-large-stage",),
              {"duration_s": 20.0})
    cfg = SchedConfig(rpc_s=0.0, central_decide_s=0.0, local_decide_s=0.0, serve_sigma=0.0,
                      gossip=GossipParams(msg_delay_s=0.0))
    for s in ("central", "gossip"):
        r = run(arr, s, nodes=1, seed=0, config=cfg)
        assert r.actions == {"serve": 40, "cold_start": 0, "migrate": 0}
        # nothing but the measured warm call: 152.1 ms
        assert np.allclose(r.latency_s, 0.1521)


def test_cold_models_are_loaded_once_then_served(steady: Arr):
    cfg = SchedConfig(prewarm=False)
    for s in ("central", "gossip"):
        r = run(steady, s, seed=1, config=cfg)
        assert r.actions["cold_start"] >= 4 and r.extra["loads"] >= 4
        assert r.actions["serve"] > 0.8 * len(steady.times_s) - r.actions["migrate"]
        assert r.ok.all()


def test_gossip_views_are_stale_but_bounded(steady: Arr):
    r = run(steady, "gossip", seed=1)
    age, err = r.extra["view_age_s"], r.extra["view_backlog_error_s"]
    period = GossipParams().period_s
    # every peer view is older than zero, and 3 nodes with fanout 3 hear from each
    # other every round: a view is at most about one period (plus two messages) old
    assert age["mean"] > 0 and age["p99"] <= period + 0.01
    assert err["max"] > 0   # at some decision the believed backlog was wrong
    assert r.extra["gossip_messages"] > 0


def test_a_node_failure_fails_requests_and_both_recover(failed: dict[str, Any]):
    for s, r in failed.items():
        # the request running on node-0 at 30 s is lost (seeded: one under each scheduler)
        assert r.extra["failed_at_crash"] >= 1, s
        assert (~r.ok).sum() >= r.extra["failed_at_crash"]
        assert len(r.recovery_s) == 1 and math.isfinite(r.recovery_s[0]), s
        # the failure sits in the 10 s window until it slides past
        assert r.recovery_s[0] >= SchedConfig().window_s - SchedConfig().sample_s
        assert r.extra["lost_models"]


def test_gossip_keeps_scheduling_while_the_coordinator_fails_over(steady: Arr,
                                                                 failed: dict[str, Any]):
    c, g = failed["central"], failed["gossip"]
    fail, failover = 30.0, SchedConfig().failover_s
    assert c.extra["coordinator_downtime"] == [(fail, fail + failover)]
    during = (steady.times_s > fail + 0.5) & (steady.times_s < fail + failover - 3)
    assert during.sum() > 20
    # central: nothing is scheduled until the standby leads, so every request arriving
    # then waits out the rest of the failover
    wait_left = fail + failover - steady.times_s[during]
    assert (c.latency_s[during] >= wait_left).all()
    # gossip: the other nodes keep deciding; the only slow ones are those whose client
    # tried node-0 first (1 s connect timeout) or needed a load
    assert np.nanmedian(g.latency_s[during]) < 0.5
    assert g.recovery_s[0] < c.recovery_s[0]
    assert c.recovery_s[0] >= failover - SchedConfig().window_s


def test_gossip_detects_the_dead_node_with_its_heartbeat_timeout(failed: dict[str, Any]):
    det = failed["gossip"].extra["detection_s"]["node-0"]
    p = GossipParams()
    assert set(det) == {"node-1", "node-2"}
    # suspected after 1.5 s of silence, dead 4 s later, checked once per 0.2 s round; the
    # silence starts with node-0's last heartbeat, up to one round before the crash
    budget = p.suspect_after_s + p.dead_after_s(3)
    for t in det.values():
        assert budget - p.period_s < t < budget + 3 * p.period_s


def test_run_result_shape_and_summary(steady: Arr, failed: dict[str, Any]):
    r = failed["central"]
    assert (r.system, r.mode) == ("central", "sim")
    assert {row.stage for row in r.timeline} == {"node-0", "node-1", "node-2"}
    assert max(row.t_s for row in r.timeline if row.stage == "node-0") == pytest.approx(30.0)
    assert all(0 <= row.memory_util <= 1 for row in r.timeline if row.memory_util is not None)
    row = summarize(r)
    assert row["scheduler_type"] == "central" and row["total_requests"] == len(steady.times_s)
    assert row["avg_recovery_time"] == pytest.approx(r.recovery_s[0])
    assert row["serve_count"] + row["cold_start_count"] + row["migrate_count"] == len(r.ok)


def test_decoder_ttft_comes_before_the_last_token():
    arr = Arr(np.arange(0.0, 40.0, 4.0), np.zeros(10, dtype=int), ("opt-125m",),
              {"duration_s": 40.0})
    r = run(arr, "central", nodes=2, seed=0)
    assert r.ok.all()
    assert (r.ttft_s < r.latency_s - 1.0).all()   # >= ~10 tokens x 93 ms after the first
    enc = run(Arr(arr.times_s, arr.target, ("minilm-stage",), arr.meta), "gossip", seed=0)
    assert np.array_equal(enc.ttft_s, enc.latency_s)


@pytest.mark.parametrize("kwargs, match", [
    ({"scheduler": "round-robin"}, "scheduler"),
    ({"nodes": 0}, "nodes"),
    ({"slo_s": 0}, "slo_s"),
    ({"seed": -1}, "seed"),
    ({"fail_at": 10.0, "nodes": 1}, "at least 2 nodes"),
    ({"fail_at": 10.0, "fail_node": "node-9"}, "fail_node"),
    ({"fail_node": "node-1"}, "without fail_at"),
    ({"fail_at": -1.0}, "fail_at"),
    ({"fail_at": 90.0}, "before the workload's end"),
    ({"memory_mib": 100.0}, "fit"),
    ({"memory_mib": [512.0, 512.0]}, "entries"),
])
def test_bad_input_is_refused(steady: Arr, kwargs: dict[str, Any], match: str):
    with pytest.raises(ValueError, match=match):
        run(steady, **kwargs)


def test_bad_arrivals_and_config_are_refused(steady: Arr):
    with pytest.raises(ValueError, match="sorted"):
        run(dataclasses.replace(steady, times_s=steady.times_s[::-1].copy()))
    with pytest.raises(ValueError, match="index"):
        run(dataclasses.replace(steady, target=steady.target + 10))
    with pytest.raises(ValueError, match="times_s"):
        run(object())
    with pytest.raises(TypeError, match="SchedConfig"):
        run(steady, config={"rpc_s": 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        SchedConfig(timeout_s=0)


def test_cli_mix_and_table(tmp_path, capsys):
    assert parse_mix("minilm-stage:2=1,opt-125m=1") == [
        ("minilm-stage-0", 0.25), ("minilm-stage-1", 0.25), ("opt-125m", 0.5)]
    for bad in ("gpt=1", "minilm-stage", "minilm-stage:0=1", "minilm-stage=x", ""):
        with pytest.raises(ValueError):
            parse_mix(bad)
    assert main(["--duration", "40", "--rps", "3", "--cv", "2", "--fail-at", "15",
                 "--out", str(tmp_path), "--name", "t"]) == 0
    out = capsys.readouterr().out
    for label in ("Success Rate (%)", "P99 TTFT (ms)", "Avg Memory Util", "P95 Queue Depth",
                  "SERVE", "COLD_START", "MIGRATE", "Recovery Time (s)", "Winner", "sha256"):
        assert label in out
    assert len(list(tmp_path.glob("t_centralized_*.csv"))) == 1
    assert len(list(tmp_path.glob("t_gossip_*.csv"))) == 1
    with pytest.raises(SystemExit):
        main(["--rps", "0"])


def test_cli_convergence_table_lists_measured_rounds():
    lines = convergence_table((4, 16), seeds=3).splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "nodes"
    assert [int(x.split()[0]) for x in lines[1:]] == [4, 16]
    assert all(float(x.split()[1]) >= 1 for x in lines[1:])


def test_gossip_view_age_grows_like_log_n_in_the_simulation():
    # fanout 1: every 4x more nodes adds about the same age (log n), far from 4x the age
    ages = {}
    for n in (3, 12, 48):
        arr = gamma_arrivals(10.0, 1.0, 20.0, {f"minilm-stage-{i}": 1.0 / n for i in range(n)},
                             seed=1)
        r = run(arr, "gossip", nodes=n, seed=0,
                config=SchedConfig(gossip=GossipParams(fanout=1)))
        ages[n] = r.extra["view_age_s"]["mean"]
    assert ages[3] < ages[12] < ages[48]
    step1, step2 = ages[12] - ages[3], ages[48] - ages[12]
    assert 0.5 < step2 / step1 < 2.0          # equal steps per 4x: logarithmic
    assert ages[48] / ages[3] < 6             # linear growth would be 16x
