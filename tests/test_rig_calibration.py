"""The rig calibration's CPU accounting against real processes: the gateway is found behind
its supervisor, and what it burns idle is not charged to requests."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.sim import livepipe, rigpipe
from benchmark.sim.calibrate_rig import idle_rates, sequential

# a child that starts a grandchild and waits: a tree of three real processes
TREE = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); time.sleep(60)")


def test_descendants_walks_the_process_tree_to_a_depth() -> None:
    child = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        deadline = time.monotonic() + 20
        while len(livepipe.descendants([child.pid])) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        every = livepipe.descendants([child.pid])
        assert len(every) == 2 and every[0] == child.pid
        assert livepipe.descendants([child.pid], depth=0) == [child.pid]
        assert sorted(livepipe.descendants([child.pid], depth=1)) == sorted(every)
    finally:
        for pid in livepipe.descendants([child.pid])[1:]:
            subprocess.run(["kill", str(pid)], check=False)
        child.kill()
        child.wait()


def test_idle_rate_of_a_busy_and_a_sleeping_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    asleep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)
        spin, rest = idle_rates([[busy.pid], [asleep.pid]], 1.0)
        assert spin > 0.3 and rest < 0.05  # a core (shared with the suite) against none
        assert idle_rates([[busy.pid]], 0.0) == [0.0]
    finally:
        for p in (busy, asleep):
            p.kill()
            p.wait()


@pytest.mark.slow
def test_calibration_charges_requests_the_gateways_cpu_and_not_its_idle_clock() -> None:
    # the gateway runs as the supervisor's child (local_provider/supervisor.py): the
    # recorded pid alone burns nothing, so a calibration that read it charged 0 ms a hop
    with rigpipe.deployed(time_scale=5.0, say=lambda s: None) as live:
        pids = live.gateway_pids()
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
                    for p in pids]
        assert any(b"local_provider.supervisor" in c for c in cmdlines)
        assert any(b"-m local_provider --role all" in c for c in cmdlines)
        seq = sequential(live, 20, 3, 4, idle_s=1.0)
    gw = seq["gateway_cpu_s"]
    # the gateway proxies 4 hops per request: milliseconds of CPU, neither 0 nor its wall
    assert 0.001 < gw < 0.1, gw
    assert 0.0 <= seq["idle_cpu_per_s"]["gateway"] < 0.5
    assert len(seq["replica_cpu_s"]) == rigpipe.STAGES
    assert all(0.0 < c < 0.1 for c in seq["replica_cpu_s"])


def test_the_bulk_check_predicts_cores_shared_by_every_start() -> None:
    from benchmark.sim.calibrate_rig import predicted_makespan

    cold = {"cpu_s_mean": 1.0, "p50_s": 1.2}  # 1 s of CPU, then 0.2 s of waiting
    assert predicted_makespan(cold, 16, 2.0) == pytest.approx(8.2)  # 16 s of CPU on 2 cores
    assert predicted_makespan(cold, 1, 2.0) == pytest.approx(1.2)  # one core at most
    # more CPU than wall time (a busy probe): the model charges no more than the wall
    assert predicted_makespan({"cpu_s_mean": 2.0, "p50_s": 1.5}, 4, 2.0) == pytest.approx(3.0)


@pytest.mark.slow
def test_bulk_cold_starts_are_real_processes_each_importing_the_stage() -> None:
    from benchmark.sim.calibrate_rig import bulk_spawn

    with rigpipe.deployed(time_scale=5.0, launcher="process", say=lambda s: None) as live:
        b = bulk_spawn(live, 3, 1)
        left = live.replica_pids("emu-stage-3")
    assert b["starts"] == 3 and len(b["cpu_s"]) == 3 and len(b["makespan_s"]) == 1
    # each a fresh interpreter that imported the stage: a good part of a CPU-second each
    assert all(c > 0.2 for c in b["cpu_s"]), b
    assert b["makespan_s"][0] >= max(b["cpu_s"]) / 2  # nobody finishes before its own CPU
    assert len(left) == 1  # scaled back to one afterwards
