"""The soak: its scoring by hand-worked tables, and one short real soak with two kill -9s.

The real soak deploys stack.yml fresh (gateway + provider, keys_manager and
zygotes, Prometheus, Redis, the plugin), sends bursty open-loop load for
~27 s, kills a replica (the provider must replace it) and the plugin (the
soak restarts it as a supervisor would), and checks that both came back, that
no request failed outside those faults and that ``down`` left nothing behind.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from checks import soak, soak_report
from checks.soak_faults import (
    KINDS,
    Fault,
    Outcome,
    ScheduleError,
    default_schedule,
    parse_schedule,
    score,
)

REPO = Path(__file__).resolve().parents[1]


def test_parse_schedule_sorts_and_refuses_bad_items():
    fs = parse_schedule(["120:zygote", "60.5:replica"])
    assert [(f.at_s, f.kind) for f in fs] == [(60.5, "replica"), (120.0, "zygote")]
    assert [f.kind for f in parse_schedule(["9:gateway", "5:hung_replica"])] == \
        ["hung_replica", "gateway"]
    for bad in ("60", "x:replica", "-1:replica", "60:provider", "60:"):
        with pytest.raises(ScheduleError):
            parse_schedule([bad])


def test_default_schedule_every_kind_once_after_warmup():
    # 300 s run, 30 s warm-up: slots of 270/8 = 33.75 s; each fault at 20 % of its slot:
    # 30 + 6.75 = 36.75, 70.5, ... 273; the gateway last, a hung replica before it
    fs = default_schedule(300, 30)
    assert [f.kind for f in fs] == list(KINDS)
    assert KINDS[-2:] == ("hung_replica", "gateway")
    assert [f.at_s for f in fs] == [36.8, 70.5, 104.2, 138.0, 171.8, 205.5, 239.2, 273.0]
    with pytest.raises(ScheduleError):
        default_schedule(30, 30)


def test_score_attributes_losses_and_recovery():
    # fault A killed at 10, healthy at 12; fault B killed at 30, healthy at 31; settle 5 s.
    # A's window: completed >= 10, sent < min(30, 12 + 5) = 17.
    #   fail(9.5 -> 10.2): in flight at the kill -> lost to A
    #   fail(11.0 -> 11.5): lost to A; the last loss was sent at 11.0
    #   ok(10.5 -> 11.9) was sent after the kill but before the last loss: not "serving"
    #   ok(11.6 -> 12.4): the first success sent after 11.0 -> serving at 11.6
    #   recovery = max(healthy 12, serving 11.6) - 10 = 2.0
    #   fail(20 -> 20.5): sent after 17 -> outside any fault
    # B: nothing failed from 30 on -> serving = kill (30), recovery = 31 - 30 = 1.0
    a, b = Fault(10, "replica", t_kill=10, t_healthy=12), Fault(30, "plugin", t_kill=30,
                                                               t_healthy=31)
    outs = [Outcome(1.0, 1.5, True), Outcome(9.5, 10.2, False, "502"),
            Outcome(11.0, 11.5, False, "ConnectionError"), Outcome(10.5, 11.9, True),
            Outcome(11.6, 12.4, True), Outcome(20.0, 20.5, False, "504"),
            Outcome(30.5, 31.0, True)]
    outside = score([b, a], outs, end_s=40)
    assert (a.lost, a.lost_codes) == (2, {"502": 1, "ConnectionError": 1})
    assert (a.t_serving, a.recovery_s) == (11.6, 2.0)
    assert (b.lost, b.t_serving, b.recovery_s) == (0, 30, 1.0)
    assert outside == [Outcome(20.0, 20.5, False, "504")]


def test_score_never_healthy_means_no_recovery():
    f = Fault(5, "zygote", t_kill=5)
    score([f], [Outcome(6, 7, True)], end_s=20)
    assert f.recovery_s is None and f.t_serving == 5


def test_growth_flags_restarts_and_per_replica_growth():
    mb = 1 << 20
    start = {"gateway": {"pids": [1], "rss": 100 * mb, "pss": 0, "n": 1},
             "plugin": {"pids": [2], "rss": 100 * mb, "pss": 0, "n": 1},
             "redis": {"pids": [3], "rss": 10 * mb, "pss": 0, "n": 1},
             "replicas": {"pids": [4, 5], "rss": 400 * mb, "pss": 0, "n": 2,
                          "per_pid": {4: 200 * mb, 5: 200 * mb}}}
    end = {"gateway": {"pids": [1], "rss": 106 * mb, "pss": 0, "n": 1},
           "plugin": {"pids": [9], "rss": 300 * mb, "pss": 0, "n": 1},
           "redis": {"pids": [3], "rss": 10 * mb, "pss": 0, "n": 1},
           "replicas": {"pids": [5, 6, 7], "rss": 800 * mb, "pss": 0, "n": 3,
                        "per_pid": {5: 205 * mb, 6: 295 * mb, 7: 300 * mb}}}
    rows = soak_report.growth(start, end)
    assert rows["gateway"]["growth"] == pytest.approx(0.06)
    assert rows["plugin"]["growth"] is None and rows["plugin"]["note"] == "restarted"
    # only pid 5 lived through: 200 -> 205 MB; 4 went, 6 and 7 are new
    assert rows["replicas"]["growth"] == pytest.approx(0.025)
    assert soak_report.flat(rows) == (False, ["gateway"])


def test_short_soak_heals_a_replica_and_the_plugin():
    # a short state path: zygote sockets live under it (Unix socket paths <= 107 bytes)
    sdir = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp")) / "s"
    cfg = soak.SoakConfig(minutes=0.45, rps=1.5, cv=2.0, seed=3, warmup_s=6, period_s=1.0,
                          restart_delay_s=1.0, faults=parse_schedule(["8:replica", "12:plugin"]),
                          stack_file=str(REPO / "stack.yml"), state_dir=sdir, progress=False)
    try:
        rep = soak.run(cfg, Console(width=160, record=True))
    finally:
        shutil.rmtree(sdir.parent, ignore_errors=True)
    assert set(rep) >= {"config", "requests", "memory", "replicas", "faults", "leaks"}
    rq = rep["requests"]
    assert rq["sent"] > 20 and rq["ok"] + rq["failed"] == rq["sent"]
    assert rq["failed_outside_faults"] == 0, rq
    by_kind = {f["kind"]: f for f in rep["faults"]}
    assert set(by_kind) == {"replica", "plugin"}
    for f in by_kind.values():
        assert f["pid"] and f["t_kill"] is not None and not f["error"], f
        assert f["recovery_s"] is not None and 0 <= f["recovery_s"] < 60, f
    assert by_kind["plugin"]["t_restart"] is not None
    # the killed replica was replaced: more replicas of its function seen than at the start
    fn = by_kind["replica"]["function"]
    assert rep["replicas"][fn]["created"] >= 1 and rep["replicas"][fn]["destroyed"] >= 1
    mem = rep["memory"]["rows"]
    assert {"gateway", "keys_manager", "plugin", "prometheus", "redis", "replicas"} <= set(mem)
    assert mem["plugin"]["note"] == "restarted"
    assert all(r["rss_end"] > 0 for r in mem.values())
    lk = rep["leaks"]
    assert lk["shm_ours_after_down"] == [] and lk["cleaned_up_by_soak"] == []
    assert not any(lk["processes_after_down"].values())


def test_score_serving_is_never_before_the_kill():
    # kill at 10: a call sent at 9.0 dies with the replica (done 10.1) -> lost;
    # the first success "after" it was sent at 9.5, before the kill -> serving = the kill
    f = Fault(10, "replica", t_kill=10, t_healthy=10.4)
    score([f], [Outcome(9.0, 10.1, False, "502"), Outcome(9.5, 10.6, True)], end_s=20)
    assert (f.lost, f.t_serving, f.recovery_s) == (1, 10, 0.4)
