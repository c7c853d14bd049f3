"""Issue 18 on real processes: the plugin (``python -m gateway_plugin``) acting on a real local
gateway (``python -m local_provider``) with a real redis-server, the scorer, a real
AlertManager delivering to the plugin, a real Prometheus, and the Redis ``quart-faas up``
starts.

Finding 3: strangers get 401 (the plugin, the scorer), AlertManager's delivery still gets
in, alerts naming unknown functions get 404, a flood of webhooks does not flood the loop;
the local Redis takes a password and Prometheus refuses its lifecycle API.  Finding 4: the
nested-JSON and lone-surrogate bodies are 400 JSON.  Finding 6: ``/healthz`` says 503 and
names the input while Prometheus, Redis or the gateway is missing, or the loop is stuck.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from checks.fuzz_services import PASSWORD, TARGET_FUNCTION, Fleet
from local_provider import deploy, plugin_services, prometheus, services
from tests.conftest import require_tool
from tests.redis_env import RedisServer

REPO = Path(__file__).resolve().parents[1]
RELAY = REPO / "tests" / "fixtures" / "relay"
AUTH = ("admin", PASSWORD)
PERIOD = 1.0
NESTED = b'{"a":' * 50000 + b"1" + b"}" * 50000
SURROGATE = (b'{"status": "firing", "alerts": [{"labels": {"function_name": "\\ud800"}}], '
             b'"inputs": ["\\ud800"]}')


def wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors")
    prom_port = services.free_port()
    f = Fleet(root, ["plugin", "scorer"], plugin_env={
        "QUART_CONTROL_PERIOD_S": str(PERIOD),
        "PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}"})
    with f as targets:
        f.prom_port = prom_port
        plugin = targets["plugin"].url
        # the plugin knows the gateway's functions once a cycle listed them
        wait(lambda: alert(plugin, TARGET_FUNCTION).status_code == 202, 30, "a first listing")
        yield f, targets


def alert(plugin: str, function: str, auth=AUTH) -> requests.Response:
    body = {"status": "firing", "alerts": [{"status": "firing", "labels": {
        "alertname": "APIHighInvocationRate", "function_name": f"{function}.openfaas-fn"}}]}
    return requests.post(f"{plugin}/system/alert", json=body, auth=auth, timeout=10)


def metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and labels.items() <= s.labels.items())


def health(plugin: str) -> tuple[int, dict[str, Any]]:
    r = requests.get(f"{plugin}/healthz", timeout=5)
    return r.status_code, r.json()


# ------------------------------------------------------------------ finding 3: strangers

def test_strangers_get_401_on_the_wire(fleet) -> None:
    _, targets = fleet
    plugin, scorer = targets["plugin"].url, targets["scorer"].url
    calls = [("POST", f"{plugin}/system/alert"), ("GET", f"{plugin}/decisions"),
             ("POST", f"{scorer}/v1/observe"), ("POST", f"{scorer}/v1/score"),
             ("GET", f"{scorer}/")]
    body = {"job_type": "s", "gpu_type": "g", "measured_runtime_s": 1.0,
            "candidate_gpu_types": ["g"]}
    for method, url in calls:
        for auth in (None, ("admin", "guess"), ("root", PASSWORD)):
            r = requests.request(method, url, json=body, auth=auth, timeout=10)
            assert r.status_code == 401, (method, url, auth, r.status_code)
            assert r.headers["WWW-Authenticate"].startswith("Basic ") and r.json()["error"]
    assert requests.get(f"{plugin}/decisions", auth=AUTH, timeout=10).status_code == 200
    assert requests.post(f"{scorer}/v1/observe", json={
        "job_type": "s", "gpu_type": "g", "measured_runtime_s": 1.0}, auth=AUTH,
        timeout=10).status_code == 200
    for url in (plugin, scorer):  # probes and scrapes carry no credentials
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 200


def test_alerts_naming_unknown_functions_are_404(fleet) -> None:
    plugin = fleet[1]["plugin"].url
    r = alert(plugin, "no-such-function")
    assert r.status_code == 404 and r.json()["unknown"] == ["no-such-function"], r.text
    r = alert(plugin, TARGET_FUNCTION)
    assert r.status_code == 202 and r.json()["accepted"] == [TARGET_FUNCTION], r.text


def test_a_webhook_flood_does_not_flood_the_loop(fleet) -> None:
    """40 webhooks in 2 s drove 40 cycles; now at most one alert cycle per period (1 s) is
    added to the timer's: over the ~3 s window at most 2 x (3 + 1) cycles."""
    plugin = fleet[1]["plugin"].url
    before, t0 = metric(plugin, "quart_plugin_cycle_seconds_count"), time.monotonic()
    for _ in range(40):  # open loop at 20/s
        assert alert(plugin, TARGET_FUNCTION).status_code == 202
        time.sleep(0.05)
    time.sleep(PERIOD)
    cycles, window = metric(plugin, "quart_plugin_cycle_seconds_count") - before, \
        time.monotonic() - t0
    print(f"{cycles:g} cycles in {window:.1f}s for 40 webhooks (period {PERIOD:g}s)")
    assert cycles <= 2 * (window / PERIOD + 1), cycles


def test_alertmanager_delivers_with_the_gateway_credentials(fleet, tmp_path) -> None:
    """The shipped route (gateway_plugin/alerting/alertmanager.yml), run by a real
    AlertManager: its webhook carries the basic auth the plugin's door wants."""
    f, targets = fleet
    plugin = targets["plugin"].url
    cfg = yaml.safe_load((REPO / "gateway_plugin" / "alerting" / "alertmanager.yml").read_text())
    cfg["route"]["group_wait"] = "1s"  # the timing is not what this test is about
    for recv in cfg["receivers"]:
        for hook in recv.get("webhook_configs", []):
            hook["url"] = f"{plugin}/system/alert"
            basic = hook.get("http_config", {}).get("basic_auth")
            if basic:  # where the Secret is mounted on Kubernetes: here, the fleet's file
                basic["password_file"] = str(f.root / "password")
    (tmp_path / "am.yml").write_text(yaml.safe_dump(cfg))
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    am = services.start(tmp_path, "alertmanager", [
        require_tool("prometheus-alertmanager"), f"--config.file={tmp_path / 'am.yml'}",
        f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=", "--log.level=warn"], url)
    try:
        assert services.wait_http(f"{url}/-/ready", 30, lambda: services.pid_alive(am.pid))
        before = metric(plugin, "quart_plugin_alerts_total", status="firing")
        r = requests.post(f"{url}/api/v2/alerts", json=[{"labels": {
            "alertname": "APIHighInvocationRate", "service": "gateway", "severity": "major",
            "function_name": f"{TARGET_FUNCTION}.openfaas-fn"}}], timeout=10)
        assert r.status_code == 200, r.text
        wait(lambda: metric(plugin, "quart_plugin_alerts_total", status="firing") > before,
             30, "the alert delivered through AlertManager")
        assert metric(url, "alertmanager_notifications_failed_total",
                      integration="webhook") == 0
    finally:
        services.stop(tmp_path, am)


# ------------------------------------------------------------------ finding 4: bodies

@pytest.mark.parametrize("body", [NESTED, SURROGATE], ids=["nested", "surrogate"])
def test_bodies_that_were_500s_are_400_json(fleet, body: bytes) -> None:
    for url in (f"{fleet[1]['plugin'].url}/system/alert", f"{fleet[1]['scorer'].url}/v1/score"):
        r = requests.post(url, data=body, auth=AUTH, timeout=10,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (url, r.status_code, r.text[:300])
        assert r.headers["Content-Type"].startswith("application/json") and r.json()["error"]


# ------------------------------------------------------------------ finding 6: health

def _deploy_pipeline(gateway: str) -> None:
    """A one-stage pipeline: from now on each cycle reads Prometheus."""
    r = requests.post(f"{gateway}/system/functions", auth=AUTH, timeout=10, json={
        "service": "doors-0", "image": "relay:doors",
        "envVars": {"QUART_SLEEP_MS": "0", "QUART_NEXT_FUNCTION": ""},
        "annotations": {"com.openfaas.quart.handler": str(RELAY),
                        "com.openfaas.quart.pipeline": "doors", "com.openfaas.quart.stage": "0",
                        "com.openfaas.quart.stages": "1"}})
    assert r.status_code in (200, 202), r.text


def _missing(plugin: str, inputs: list[str]) -> Callable[[], dict | None]:
    def check() -> dict | None:
        code, body = health(plugin)
        return body if code == 503 and body.get("missing") == inputs else None
    return check


def _ok(plugin: str) -> bool:
    code, body = health(plugin)
    return code == 200 and body["ok"] and not body.get("missing")


def test_healthz_names_each_missing_input_and_a_stuck_loop(fleet) -> None:
    f, targets = fleet
    plugin = targets["plugin"].url
    wait(lambda: _ok(plugin), 10, "healthy with every input there")
    _deploy_pipeline(f.gateway_url)
    body = wait(_missing(plugin, ["prometheus"]), 15, "503 naming Prometheus")
    assert any("metrics unavailable" in p for p in body["problems"]), body
    assert requests.get(f"{plugin}/livez", timeout=5).status_code == 200  # it still cycles
    urls = json.loads((f.state / "serve.json").read_text())
    prom = prometheus.start(f.root, f.prom_port, {"gateway": [
        urls["metrics_url"].split("//", 1)[1]]}, scrape_interval_s=1.0)
    try:
        wait(lambda: _ok(plugin), 20, "healthy again once Prometheus answers")
        redis_proc = next(p for p in f.started if p.name == "redis")
        redis_proc.stop()
        wait(_missing(plugin, ["redis"]), 15, "503 naming Redis")
        port = int(f.redis_url.rsplit(":", 1)[1].split("/")[0])
        rs = RedisServer(f.root / "redis2", port)
        (f.root / "redis2").mkdir()
        rs.start()
        try:
            wait(lambda: _ok(plugin), 20, "healthy again once Redis answers")
            _stuck_gateway_then_gone(f, plugin)
        finally:
            rs.stop()
    finally:
        services.stop(f.root, prom)


def _stuck_gateway_then_gone(f: Fleet, plugin: str) -> None:
    """A gateway that accepts and never answers holds the cycle in its timeouts: after three
    periods /healthz and /livez say so; a gateway that is gone is named."""
    lp = next(p for p in f.started if p.name == "local_provider")
    os.kill(lp.popen.pid, signal.SIGSTOP)
    try:
        body = wait(lambda: (lambda c, b: b if c == 503 else None)(*health(plugin)), 15,
                    "503 for a stuck loop")
        assert "more than 3 periods" in body["problems"][0], body
        assert requests.get(f"{plugin}/livez", timeout=5).status_code == 503
    finally:
        os.kill(lp.popen.pid, signal.SIGCONT)
    wait(lambda: _ok(plugin), 40, "healthy again once the gateway answers")
    lp.stop()
    body = wait(_missing(plugin, ["gateway"]), 20, "503 naming the gateway")
    assert any("gateway unavailable" in p for p in body["problems"]), body


# ------------------------------------------------------------------ finding 3: Redis, Prometheus

def test_the_local_redis_takes_a_generated_password(tmp_path) -> None:
    url = f"redis://127.0.0.1:{services.free_port()}/0"
    authed = plugin_services.ensure_redis(tmp_path, url, lambda _m: None)
    try:
        assert authed and authed != url and plugin_services.redis_answers(authed)
        assert not plugin_services.redis_answers(url)  # a stranger without it is refused
        pw_file = tmp_path / "redis-password"
        password = pw_file.read_text().strip()
        assert len(password) >= 24 and f":{password}@" in authed
        assert pw_file.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
        (svc,) = [s for s in services.recorded(tmp_path) if s.name == "redis"]
        assert password.encode() not in Path(f"/proc/{svc.pid}/cmdline").read_bytes()
        assert password not in (tmp_path / "run" / "redis.json").read_text()
        # a second `up` finds ours by the stored password instead of starting another
        assert plugin_services.ensure_redis(tmp_path, url, lambda _m: None) == authed
        assert len(services.recorded(tmp_path)) == 1
    finally:
        assert deploy.down(tmp_path, lambda _m: None) == 1
    assert not plugin_services.redis_answers(authed)


def test_prometheus_refuses_its_lifecycle_api(tmp_path) -> None:
    """Started by `quart-faas up`, Prometheus answers /-/quit and /-/reload with 403 and goes
    on; SIGHUP (its owner's) still reloads it."""
    port = services.free_port()
    svc = prometheus.start(tmp_path, port, {"nothing": ["127.0.0.1:9"]}, 1.0)
    url = f"http://127.0.0.1:{port}"
    try:
        for path in ("/-/quit", "/-/reload"):
            r = requests.post(url + path, timeout=5)
            assert r.status_code == 403 and "Lifecycle API is not enabled" in r.text, r.text
        assert requests.get(url + "/-/ready", timeout=5).ok and services.pid_alive(svc.pid)
        before = metric(url, "prometheus_config_last_reload_success_timestamp_seconds")
        time.sleep(1.1)  # the timestamp has a resolution of one second
        os.kill(svc.pid, signal.SIGHUP)
        wait(lambda: metric(url, "prometheus_config_last_reload_success_timestamp_seconds")
             > before, 15, "a reload on SIGHUP")
    finally:
        services.stop(tmp_path, svc)

