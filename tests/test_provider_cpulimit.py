"""limits.cpu enforced as a cgroup CFS quota per replica, changed in place by PUT."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_provider_helpers import Server, deployment, start_server, wait_for

from local_provider.cpulimit import CpuLimiter, parse_cpu
from tests.conftest import skip_outside_ci


@pytest.mark.parametrize("text, cpus", [("500m", 0.5), ("1", 1.0), ("1.5", 1.5), ("", None),
                                        ("2000m", 2.0)])
def test_parse_cpu(text, cpus):
    assert parse_cpu(text) == cpus


@pytest.mark.parametrize("text", ["-1", "0", "1 cpu", "5k", "m"])
def test_parse_cpu_rejects(text):
    with pytest.raises(ValueError):
        parse_cpu(text)


def test_unwritable_hierarchy_is_reported_not_fatal(tmp_path):
    lim = CpuLimiter("quart-x", root=tmp_path)  # no controllers there
    assert not lim.available and "not enforced" in lim.reason
    lim.sync({("f", 0): (1, 0.5)})  # a no-op, never an error
    assert lim.describe()["available"] is False


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    s = start_server(tmp_path_factory.mktemp("cpu"))
    yield s
    assert s.stop() == 0


def cgroup_of(pid: int) -> str:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next((ln.split(":", 2)[2] for ln in lines
                 if ln.split(":")[1] in ("cpu", "cpu,cpuacct", "") and "quart-" in ln), "")


def test_limits_cpu_becomes_a_quota_and_changes_in_place(server):
    caps = server.api("GET", "/system/quart/capabilities").json()["cpu_limits"]
    if not caps["available"]:
        skip_outside_ci(f"cgroup CPU limits unavailable: {caps['reason']}")
    server.deploy("burner", limits={"cpu": "100m"})
    pid = server.call("burner").json()["pid"]
    wait_for(lambda: cgroup_of(pid).endswith("/burner/0"), 5, what="replica in its cgroup")
    quota = Path(caps["path"]) / "burner" / "0"
    read = (lambda: (quota / "cpu.max").read_text().split()[0]) if caps["cgroup"] == "v2" else \
        (lambda: (quota / "cpu.cfs_quota_us").read_text().strip())
    assert read() == "10000"  # 0.1 CPU of a 100 ms period
    slow = server.call("burner", json={"burn_ms": 150}).json()["burn_wall_s"]
    assert slow > 4 * 0.150, f"150 ms of CPU under a 0.1 CPU quota took only {slow:.3f}s"

    body = deployment("burner", limits={"cpu": "1500m"})
    assert server.api("PUT", "/system/functions", json=body).status_code == 202
    wait_for(lambda: read() == "150000", 5, what="quota rewritten")
    assert server.call("burner").json()["pid"] == pid  # the replica kept running

    bad = deployment("burner", limits={"cpu": "lots"})
    r = server.api("PUT", "/system/functions", json=bad)
    assert r.status_code == 400 and "limits.cpu" in r.json()["error"]
    assert server.api("DELETE", "/system/functions", json={"functionName": "burner"}).status_code \
        in (200, 202)
    wait_for(lambda: not (Path(caps["path"]) / "burner").exists(), 10, what="cgroup removed")


def test_the_plugins_cpu_actuation_reaches_the_quota(server):
    """gateway_plugin.actuate.Gateway.set_cpu -> PUT /system/functions -> cgroup quota."""
    from gateway_plugin.actuate import Gateway

    caps = server.api("GET", "/system/quart/capabilities").json()["cpu_limits"]
    if not caps["available"]:
        skip_outside_ci(f"cgroup CPU limits unavailable: {caps['reason']}")
    server.deploy("compensated", limits={"cpu": "1"})
    pid = server.call("compensated").json()["pid"]
    gw = Gateway(server.gateway, server.auth)
    assert not gw.is_community_edition()
    fn = next(f for f in gw.functions() if f.name == "compensated")
    assert fn.cpu == 1.0
    gw.set_cpu(fn, 0.3)
    quota = Path(caps["path"]) / "compensated" / "0"
    read = (lambda: (quota / "cpu.max").read_text().split()[0]) if caps["cgroup"] == "v2" else \
        (lambda: (quota / "cpu.cfs_quota_us").read_text().strip())
    wait_for(lambda: read() == "30000", 5, what="quota 0.3 CPU")
    again = next(f for f in gw.functions() if f.name == "compensated")
    assert again.cpu == pytest.approx(0.3) and again.body["envVars"] == fn.body["envVars"]
    assert server.call("compensated").json()["pid"] == pid  # in place, no restart


def test_a_replica_is_limited_before_it_serves(tmp_path_factory):
    """Placed in its cgroup as it is launched, not at the reconcile tick after: with a 0.25 s
    tick a replica ready in 0.2 s served unlimited for a moment, and a test (the one above)
    reading its quota right after deploy found no cgroup yet (FileNotFoundError). A tick
    that never comes in the test's time makes the old order fail every time."""
    s = start_server(tmp_path_factory.mktemp("cpu-early"), env={"QUART_RECONCILE_PERIOD_S": "60"})
    try:
        caps = s.api("GET", "/system/quart/capabilities").json()["cpu_limits"]
        if not caps["available"]:
            skip_outside_ci(f"cgroup CPU limits unavailable: {caps['reason']}")
        s.deploy("early", limits={"cpu": "250m"})
        pid = s.call("early").json()["pid"]
        assert cgroup_of(pid).endswith("/early/0")
        quota = Path(caps["path"]) / "early" / "0"
        got = (quota / "cpu.max").read_text().split()[0] if caps["cgroup"] == "v2" else \
            (quota / "cpu.cfs_quota_us").read_text().strip()
        assert got == "25000"
    finally:
        assert s.stop() == 0

