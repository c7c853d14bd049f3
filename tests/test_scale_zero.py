"""Scale to zero: the plugin's pure step (a table), and the whole loop with real processes:
a deployed relay pipeline whose functions carry OpenFaaS Pro's scale-to-zero labels goes to
zero replicas after its idle window (keeping zygotes and pooled workers), and one request
through the gateway wakes every stage in turn and is answered."""
from __future__ import annotations

import json
import time

import pytest
import requests

from gateway_plugin.policies.idle import (
    DEFAULT_ZERO_DURATION_S,
    last_active,
    parse_duration,
    scale_to_zero,
    zero_window_s,
)
from keys_manager.client import call
from tests import pipeline_env
from tests.redis_env import RedisServer
from tests.test_plugin_live import FN, Plugin, stack, wait

ZERO = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "4s"}


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("90s", 90.0), ("1h30m", 5400.0), ("250ms", 0.25), ("1.5h", 5400.0),
    ("0s", 0.0), ("30", 30.0), (" 2m ", 120.0)])
def test_durations_read_as_go_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "5x", "5m3", "-1s", "1h-5m", "five minutes"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("labels", "expected"), [
    ({}, (None, "")),
    ({"com.openfaas.scale.zero": "false", "com.openfaas.scale.zero-duration": "1m"},
     (None, "")),
    ({"com.openfaas.scale.zero": "true"}, (DEFAULT_ZERO_DURATION_S, "")),
    ({"com.openfaas.scale.zero": "True", "com.openfaas.scale.zero-duration": "5m"},
     (300.0, "")),
    ({"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "soon"},
     (DEFAULT_ZERO_DURATION_S, "com.openfaas.scale.zero-duration: 'soon' is not a duration "
                               "such as 5m, 90s or 1h30m; using 15m")),
])
def test_labels_opt_in_with_a_window(labels: dict[str, str],
                                     expected: tuple[float | None, str]) -> None:
    assert zero_window_s(labels) == expected


@pytest.mark.parametrize(("replicas", "idle_s", "window_s", "expected"), [
    (3, 1e6, None, (3, "")),  # not opted in: never
    (2, 299.0, 300.0, (2, "")),  # idle, not for long enough
    (2, 300.0, 300.0, (0, "idle 300s >= com.openfaas.scale.zero-duration 300s: scale to zero")),
    (1, 61.0, 60.0, (0, "idle 61s >= com.openfaas.scale.zero-duration 60s: scale to zero")),
    (0, 10.0, 60.0, (0, "")),  # at zero, still idle: stays (unchanged)
    (1, 0.0, 0.0, (0, "idle 0s >= com.openfaas.scale.zero-duration 0s: scale to zero")),
])
def test_the_step_scales_an_idle_function_to_zero(replicas: int, idle_s: float,
                                                  window_s: float | None,
                                                  expected: tuple[int, str]) -> None:
    assert scale_to_zero(replicas, idle_s, window_s) == expected


@pytest.mark.parametrize(("previous", "busy", "woken", "expected"), [
    (None, False, False, 100.0),  # first seen: the idle clock starts now
    (40.0, False, False, 40.0),  # idle: the clock runs on
    (40.0, True, False, 100.0),  # arrivals, a queue
    (40.0, False, True, 100.0),  # woken from zero by the gateway
])
def test_activity_restarts_the_idle_clock(previous: float | None, busy: bool, woken: bool,
                                          expected: float) -> None:
    assert last_active(previous, 100.0, busy, woken) == expected


# ---------------------------------------------------------------- the loop, for real


def _with_zero_labels(dep: pipeline_env.Deployment, fn: str) -> None:
    """Add the labels through the gateway (a metadata-only update keeps the replicas);
    ``quart-faas up`` takes stacks as Community Edition does, which refuses Pro labels."""
    st = requests.get(f"{dep.gateway}/system/function/{fn}", auth=dep.auth, timeout=5).json()
    body = {k: st[k] for k in ("image", "envProcess", "envVars", "annotations") if k in st}
    body |= {"service": fn, "labels": {**(st.get("labels") or {}), **ZERO}}
    r = requests.put(f"{dep.gateway}/system/functions", json=body, auth=dep.auth, timeout=10)
    assert r.status_code in (200, 202), r.text


def _replicas(dep: pipeline_env.Deployment, fn: str) -> int:
    r = requests.get(f"{dep.gateway}/system/function/{fn}", auth=dep.auth, timeout=5)
    return int(r.json()["replicas"])


@pytest.fixture(scope="module")
def zero_env(tmp_path_factory, minilm3):
    root = tmp_path_factory.mktemp("zero")
    rs = RedisServer(root).start()
    dep = pipeline_env.up(root / "state", minilm3, stack(root))
    plugin = None
    try:
        for fn in FN:
            _with_zero_labels(dep, fn)
        plugin = Plugin(dep, rs.url, root)
        plugin.env["QUART_CONTROL_PERIOD_S"] = "1"
        plugin.env["QUART_KEYS_SOCKET"] = str(dep.state / "keys_manager.sock")  # pool hints
        plugin.start()
        yield dep, plugin
    finally:
        if plugin is not None:
            plugin.kill()
        pipeline_env.cli(["down", "--state-dir", str(dep.state)], dep.env)
        rs.stop()


def _why(dep: pipeline_env.Deployment, plugin: Plugin) -> str:
    """What the plugin last decided and logged: a failure here must say why."""
    try:
        ds = [d for d in plugin.decisions(60) if d.get("function") in FN][-2 * len(FN):]
    except (requests.RequestException, ValueError) as e:
        ds = [{"error": repr(e)}]
    keys = ("t", "function", "from", "replicas", "policy", "step", "action", "error", "inputs")
    return "\n".join([*(json.dumps({k: d.get(k) for k in keys}) for d in ds),
                      "plugin log:", plugin.log.read_text(errors="replace")[-4000:],
                      "replicas: " + str({fn: _replicas(dep, fn) for fn in FN})])


def test_an_idle_pipeline_goes_to_zero_and_a_request_wakes_it(zero_env) -> None:
    dep, plugin = zero_env
    try:
        wait(lambda: all(_replicas(dep, fn) == 0 for fn in FN), 90, "every stage at zero")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_why(dep, plugin)}") from None
    zeroed = [d for d in plugin.decisions() if d.get("policy") == "idle"]
    assert {d["function"] for d in zeroed} == set(FN)
    step = zeroed[0]["step"]
    assert step["step"] == "scale_to_zero" and "zero-duration 4s" in step["reason"]
    wait(lambda: not pipeline_env.serving_pids(dep, FN[-1]), 30, "the last replica drained")
    st = call(dep.state / "keys_manager.sock", {"op": "status"})["status"]
    kept = {z["function"] for z in st["zygotes"] if z["alive"]}
    assert set(FN) <= kept, "a stage at zero keeps its zygote"
    assert {fn: st["pool"]["sizes"].get(fn) for fn in FN} == dict.fromkeys(FN, 1)  # hinted
    assert all(d["pool"] == 1 for d in zeroed)
    t0 = time.monotonic()
    r = requests.post(f"{dep.gateway}/function/{FN[0]}", json={}, timeout=60)
    woke_s = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert all(_replicas(dep, fn) >= 1 for fn in FN)
    assert woke_s < 30
    after = time.time()  # the plugin's clock: two more decisions on every stage, none zero
    later = wait(lambda: (ds := [d for d in plugin.decisions() if d["t"] > after and
                                 d["function"] in FN]) and len(ds) >= 2 * len(FN) and ds,
                 30, "two control cycles after the wake")
    assert all(d["replicas"] >= 1 for d in later), "woken, then scaled straight back to zero"
    assert all(_replicas(dep, fn) >= 1 for fn in FN)
