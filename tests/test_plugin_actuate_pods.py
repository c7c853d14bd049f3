"""``QUART_ACTUATOR=pods``: the pod actuator over local pods, their CPU a real cgroup quota
(cgroup v1 or v2, written in place), their control endpoints by the contract
(tests/fake_kube_api.FakePodControl, until pod mode runs here)."""
from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pytest

from gateway_plugin.actuate import Gateway
from gateway_plugin.actuators import PodActuator, make_actuator
from gateway_plugin.config import PluginConfig
from gateway_plugin.local_pods import LocalPod, LocalPods, read_cpu_millis, write_cpu_millis
from local_provider import services
from tests.conftest import skip_outside_ci
from tests.fake_faas_netes import FakeFaasNetes
from tests.fake_kube_api import FakePodControl
from tests.test_plugin_actuate_kubernetes import FN, TOKEN, stage

ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def cgroups():
    """A writable CPU cgroup directory for the test's pods, removed afterwards."""
    if (ROOT / "cgroup.controllers").is_file():
        parent, v2 = ROOT, True
    else:
        parent, v2 = ROOT / "cpu", False
    base = parent / f"quart-test-{uuid.uuid4().hex[:8]}"
    try:
        base.mkdir()
        if v2:
            (base / "cgroup.subtree_control").write_text("+cpu")
    except OSError as e:
        skip_outside_ci(f"no writable CPU cgroup under {parent}: {e}")
    made: list[Path] = []

    def make(name: str, millis: int) -> Path:
        d = base / name
        d.mkdir()
        made.append(d)
        write_cpu_millis(d, millis)
        return d

    yield make
    for d in [*made, base]:
        d.rmdir()


def test_quota_read_back_in_both_formats(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert read_cpu_millis(tmp_path) == 1500
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert read_cpu_millis(tmp_path) is None


def test_registry_pods_scale_by_fork_and_quota(cgroups, tmp_path):
    """2 local pods at 1 CPU with 1 worker, target 4: each cgroup quota is raised to 2 CPUs
    in place, then each pod forks a 2nd worker; target 2 again: workers retire first, then
    the quota comes back to 1 CPU."""
    port = services.free_port()
    reg = tmp_path / "pods"
    (reg / FN).mkdir(parents=True)
    groups = {}
    with contextlib.ExitStack() as stack:
        pods = {}
        for i in range(2):
            name = f"{FN}-{i}"
            groups[name] = cgroups(name, 1000)
            pods[name] = stack.enter_context(FakePodControl(f"127.0.0.{i + 2}", port, TOKEN))
            (reg / FN / f"{name}.json").write_text(json.dumps(
                {"name": name, "control_url": f"http://127.0.0.{i + 2}:{port}",
                 "cgroup": str(groups[name]), "ready": True, "workers": 1}))
        gw = stack.enter_context(FakeFaasNetes({FN: stage(2)}, echo_env=True))
        (tmp_path / "token").write_text(TOKEN)
        cfg = PluginConfig(actuator="pods", pod_registry=str(reg),
                           control_token_file=str(tmp_path / "token"))
        act = make_actuator(cfg, Gateway(gw.url, None))
        assert isinstance(act, PodActuator) and act.name == "pods"
        (f,) = act.view(act.gw.functions())
        assert (f.replicas, f.max_replicas) == (2, 5 * 4)  # its scale.max label: 5 pods
        out = act.apply(f, 4, 1.0)
        assert out.error == "" and out.speeds == ("workers", "cpu")
        assert [read_cpu_millis(g) for g in groups.values()] == [2000, 2000]
        assert [p.workers for p in pods.values()] == [2, 2]
        (f,) = act.view(act.gw.functions())
        assert f.replicas == 4
        out = act.apply(f, 2, 1.0)
        assert out.action == "down" and [p.workers for p in pods.values()] == [1, 1]
        assert [read_cpu_millis(g) for g in groups.values()] == [1000, 1000]
        assert gw.calls("PUT") == [] and gw.calls("POST") == []


def test_a_busy_pod_keeps_its_workers_and_cpu(cgroups, tmp_path):
    """A pod that answers its control call 429 (as through the watchdog at its
    max_inflight; the control port avoids that, but a pod may still miss a cycle).  The
    plugin then counts it as it last answered (3 workers, not its initial 1) and neither
    cuts its CPU to one worker's nor retires anything; once it answers again, scaling goes
    on from there."""
    port = services.free_port()
    reg = tmp_path / "pods"
    (reg / FN).mkdir(parents=True)
    group = cgroups(f"{FN}-0", 1000)
    with FakePodControl("127.0.0.2", port, TOKEN) as ctl, \
            FakeFaasNetes({FN: stage(1)}, echo_env=True) as gw:
        (reg / FN / f"{FN}-0.json").write_text(json.dumps(
            {"name": f"{FN}-0", "control_url": f"http://127.0.0.2:{port}",
             "cgroup": str(group), "ready": True, "workers": 1}))
        (tmp_path / "token").write_text(TOKEN)
        cfg = PluginConfig(actuator="pods", pod_registry=str(reg),
                           control_token_file=str(tmp_path / "token"))
        act = make_actuator(cfg, Gateway(gw.url, None))
        (f,) = act.view(act.gw.functions())
        assert act.apply(f, 3, 1.0).speeds == ("workers", "cpu")
        assert (ctl.workers, read_cpu_millis(group)) == (3, 3000)
        ctl.saturated = True
        (f,) = act.view(act.gw.functions())
        assert (f.replicas, f.available) == (3, 3)  # as it last answered
        out = act.apply(f, 3, 1.0)
        assert out.speeds == () and read_cpu_millis(group) == 3000  # not cut to 1000m
        ctl.saturated = False
        (f,) = act.view(act.gw.functions())
        assert act.apply(f, 4, 1.0).speeds == ("workers", "cpu")
        assert (ctl.workers, read_cpu_millis(group)) == (4, 4000)
        assert gw.calls("POST") == []


def test_in_process_pods_and_a_new_pod(tmp_path):
    """The in-process protocol: pods from a callable, CPU through each pod's own callable;
    a pod at its CPU maximum makes the next worker a new pod through the gateway."""
    port = services.free_port()
    resized: list[tuple[str, int]] = []
    with FakePodControl("127.0.0.2", port, TOKEN) as ctl, \
            FakeFaasNetes({FN: stage(1)}, echo_env=True) as gw:
        pod = LocalPod(FN, f"{FN}-0", f"http://127.0.0.2:{port}", 1000,
                       lambda m: resized.append((f"{FN}-0", m)))
        (tmp_path / "token").write_text(TOKEN)
        cfg = PluginConfig(actuator="pods", control_token_file=str(tmp_path / "token"),
                           pod_max_cpu=2.0)
        act = make_actuator(cfg, Gateway(gw.url, None), LocalPods(lambda: [pod]))
        (f,) = act.view(act.gw.functions())
        out = act.apply(f, 3, 1.0)
        assert resized == [(f"{FN}-0", 2000)] and ctl.workers == 2
        assert out.speeds == ("workers", "cpu", "pods") and gw.functions[FN]["replicas"] == 2
