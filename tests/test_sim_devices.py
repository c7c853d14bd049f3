"""The simulator's emulated-device stages against the rig's rules (functions/stage/device.py):
device time is capacity bound by a node's devices, takes no CPU, is what Server-Timing
reports; hand-overs, late wakes; the rig's pipeline read from the partition's manifest."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from benchmark.results import TimelineRow
from benchmark.sim import ClusterSpec, PipelineSpec, SimConfig, StageSpec, run
from benchmark.sim.devices import Devices
from benchmark.sim.validate_autoscale import replica_seconds
from benchmark.workloads import Arrivals
from tests.conftest import skip_outside_ci
from tests.test_sim import Hold


def burst(n: int, at: float = 1.0) -> Arrivals:
    return Arrivals(np.full(n, at), np.zeros(n, dtype=np.int32), ("p",), {"duration_s": at + 1})


def device_stage(mean_s: float = 0.1, replicas: int = 1, **kw) -> PipelineSpec:  # type: ignore[no-untyped-def]
    return PipelineSpec("p", (StageSpec("p-0", mean_s, replicas=replicas, device=True,
                                        max_inflight=8, **kw),), slo_s=10.0)


def node(devices: int, cores: float = 2.0, background: float = 0.0) -> ClusterSpec:
    return ClusterSpec.uniform(1, 64.0, cores, background=background, devices=devices)


def test_replicas_are_capacity_up_to_the_devices() -> None:
    # 8 requests at once, 100 ms each: 4 replicas on 16 devices finish in 2 rounds (0.2 s);
    # on 2 devices the 4 replicas share them: 4 rounds (0.4 s); 1 replica: 8 rounds
    def last(replicas: int, devices: int) -> float:
        return float(run(burst(8), device_stage(replicas=replicas), Hold(),
                         cluster=node(devices)).latency_s.max())

    assert last(4, 16) == pytest.approx(0.2)
    assert last(4, 2) == pytest.approx(0.4)
    assert last(1, 16) == pytest.approx(0.8)


def test_device_time_takes_no_cpu_host_time_does() -> None:
    # ten always-runnable threads on one core: a device hold is not stretched, the
    # replica's own host CPU (10 ms at 1/11 of the core: 110 ms) is
    one = burst(1)
    busy = node(16, cores=1.0, background=10.0)
    assert run(one, device_stage(), Hold(), cluster=busy).latency_s[0] == pytest.approx(0.1)
    lat = run(one, device_stage(host_cpu_s=0.01), Hold(), cluster=busy).latency_s[0]
    assert lat == pytest.approx(0.1 + 0.11)
    # and a device stage on a node without devices is refused, naming the field
    with pytest.raises(ValueError, match="devices"):
        run(one, device_stage(), Hold(), cluster=ClusterSpec.uniform(1, 64.0, 2.0))


def test_the_clients_slots_hold_a_burst_back_and_its_wait_counts() -> None:
    # six requests at once on two replicas of 0.1 s: unbounded, pairs finish at 0.1, 0.2,
    # 0.3 s; with one client slot they go one at a time (0.1, 0.2, ... 0.6 s), the wait
    # for the slot counted from the planned time, as benchmark/openloop.py counts it
    six, two = burst(6), device_stage(replicas=2)
    free = run(six, two, Hold(), cluster=node(16)).latency_s
    assert sorted(free) == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    one = run(six, two, Hold(), cluster=node(16), config=SimConfig(client_slots=1))
    assert sorted(one.latency_s) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert one.ok.all()
    with pytest.raises(ValueError, match="client_slots"):
        SimConfig(client_slots=0)


def test_server_timing_is_the_device_hold_and_hand_overs_come_between() -> None:
    # 3 requests at once on one replica, 100 ms holds and a 5 ms hand-over between
    # back-to-back holds: done at 0.1, 0.205, 0.31; the gateway's compute time (what the
    # plugin reads as service time) is 0.1 for each, not the time waiting for the lock
    class Spy(Hold):
        seen: ClassVar[list[float]] = []

        def decide(self, tick, state):  # type: ignore[no-untyped-def]
            svc = tick.pipelines[0].stages[0].service_time_s
            if svc is not None:
                self.seen.append(svc)
            return super().decide(tick, state)

    spy = Spy(period_s=1.0)
    times = np.repeat(np.arange(0.5, 10.0, 1.0), 3)  # a burst of 3 every second
    arr = Arrivals(times, np.zeros(len(times), dtype=np.int32), ("p",), {"duration_s": 10.0})
    res = run(arr, device_stage(handoff_s=0.005), spy, cluster=node(16),
              config=SimConfig(scrape_s=1.0))
    assert np.allclose(res.latency_s.reshape(-1, 3), [0.1, 0.205, 0.31])
    assert spy.seen and np.allclose(spy.seen, 0.1)


def test_late_wakes_happen_at_their_measured_share() -> None:
    spec = dataclasses.replace(device_stage().stages[0], late_p=0.25, late_s=(0.05,))
    arr = Arrivals(np.arange(400) * 0.5, np.zeros(400, dtype=np.int32), ("p",),
                   {"duration_s": 200.0})
    lat = run(arr, PipelineSpec("p", (spec,), 10.0), Hold(period_s=50.0),
              cluster=node(16), seed=3).latency_s
    late = np.isclose(lat, 0.15)
    assert np.all(late | np.isclose(lat, 0.1))
    assert late.mean() == pytest.approx(0.25, abs=0.06)
    with pytest.raises(ValueError, match="late_p"):
        StageSpec("x", 0.1, device=True, late_p=0.1)


def test_binding_takes_the_first_free_slot_and_rebalances_after_deaths() -> None:
    import simpy

    class R:
        def __init__(self, uid: int) -> None:
            self.uid, self.busy, self.dead = uid, None, False

    env = simpy.Environment()
    d = Devices(2, env, lambda r: None)
    rs = [R(i) for i in range(4)]
    assert [d.bind(r.uid) for r in rs] == [0, 1, 0, 1]  # levels 0 then 1
    assert d.occupancy() == [2, 2]
    for r in rs[:2]:  # both level-0 replicas die: (1,0) and (1,1) stay bound
        d.release(r)
    rs.append(R(9))
    assert d.bind(9) == 0  # the first free slot is (0, 0): device 0 now has two
    assert d.occupancy() == [2, 1]
    d.release(rs[3])  # device 1 empties; replica 2 (level 1 on device 0) moves there
    env.run(until=1.0)  # at most once per second (REBALANCE_S)
    assert d.bind(2) == 1 and d.occupancy() == [1, 1]


def test_the_rig_pipeline_reads_device_times_from_the_partition(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from benchmark.sim.rig import RigHost, request_shape, rig_pipeline
    from functions.partitioner import partition
    from functions.stage.bert import BertConfig
    from functions.stage.emulated_profile import ServiceModel

    out = tmp_path / "emu"
    partition(out, 4, model="emulated:bert-large")
    texts = ("one two three", "four five six seven eight")
    host = RigHost.load()
    host = dataclasses.replace(host, device_extra_s=(0.0,) * 4)
    pipe = rig_pipeline(out, texts, 50.0, host)
    import json

    m = json.loads((out / "manifest.json").read_text())
    cfg = BertConfig.from_dict(m["config"])
    b, t = request_shape(out, texts)
    assert (b, t) == (2, 7)  # [CLS] + 5 words + [SEP], padded to the longest
    for k, st in enumerate(pipe.stages):
        sm = ServiceModel.from_manifest(m, k, cfg, "", 50.0)
        assert st.device and st.dist == "gamma"
        assert st.service_mean_s == pytest.approx(sm.mean_s(cfg, b, t))
        assert st.service_cv == pytest.approx(sm.cv)
        assert st.host_cpu_s == host.host_cpu_s[k] and st.spawn == "emulated"
    slower = rig_pipeline(out, texts, 100.0, host)
    assert slower.stages[0].service_mean_s == pytest.approx(2 * pipe.stages[0].service_mean_s)


def test_replica_seconds_integrate_the_window() -> None:
    rows = [TimelineRow(0.5, "a", 1, 1, 0, 0, None, 0), TimelineRow(2.0, "a", 3, 3, 0, 0, None, 0),
            TimelineRow(9.0, "a", 5, 5, 0, 0, None, 0), TimelineRow(1.0, "b", 2, 2, 0, 0, None, 0)]
    # a: 1 over [0, 2), 3 over [2, 4) -> 8 (the row at 9 s is past the end); b: 2 x 4
    assert replica_seconds(rows, 4.0) == pytest.approx(8.0 + 8.0)


def test_prioritise_sets_the_session_autogroup_too() -> None:
    # under sched_autogroup a thread's nice counts only within its session: the session's
    # autogroup must be set as well (nice +5 needs no privilege)
    from benchmark.sim.livepipe import prioritise

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        path = f"/proc/{child.pid}/autogroup"
        if not os.path.exists(path):
            skip_outside_ci("this kernel has no autogroups (CONFIG_SCHED_AUTOGROUP)")
        assert prioritise([child.pid], 5) >= 1
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 5
        assert Path(path).read_text().split()[-1] == "5"
    finally:
        child.kill()
        child.wait()


def test_cold_starts_share_the_node_cpu(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a cold start burns 1 core-second (of 1.2 s alone); four at once on one core take
    # ~4 s of CPU each at a quarter core, then 0.2 s of waiting: ready at ~4.2 s, not 1.2
    from benchmark.sim import calibration

    monkeypatch.setitem(calibration.SPAWN, "test", calibration.SpawnProfile(
        0.04, 0.04, 1.2, 1.2, 0.0, "test", cold_cpu_s=1.0))
    pipe = PipelineSpec("p", tuple(StageSpec(f"p-{k}", 0.01, device=True, spawn="test")
                                   for k in range(4)), 10.0)
    want = {f"p-{k}": 2 for k in range(4)}
    arr = Arrivals(np.array([0.0, 9.0]), np.zeros(2, dtype=np.int32), ("p",),
                   {"duration_s": 10.0})

    def ready_at(scaleup: str) -> float:
        res = run(arr, pipe, Hold(scaleup, period_s=1.0, want=want),
                  cluster=node(16, cores=1.0), config=SimConfig(timeline_s=0.1))
        full = [r.t_s for r in sorted(res.timeline, key=lambda r: r.t_s)
                if all(x.replicas == 2 for x in res.timeline if x.t_s == r.t_s)]
        return min(full) - 1.5  # the system asks at 1.5 s

    assert ready_at("cold") == pytest.approx(4.2, abs=0.15)
    assert ready_at("fork") == pytest.approx(0.04, abs=0.1)  # forks burn no modelled CPU
