"""Issue 18, findings 3, 4 and 6 on the smallest real parts: the plugin's and the scorer's
Flask apps (their doors, their error answers, their body parsing), the alert pacing and the
health rules with a fake clock.  The same on real processes: tests/test_plugin_doors_live.py.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

import webguard
from contracts.basic_auth import BasicAuth
from gateway_plugin import openapi as plugin_openapi
from gateway_plugin.app import create_app as plugin_app
from gateway_plugin.health import Health
from gateway_plugin.pacing import Triggers
from scorer import openapi as scorer_openapi
from scorer.app import create_app as scorer_app
from scorer.config import ScorerConfig
from scorer.service import ScoringService
from scorer.store import MemoryBackend

AUTH = BasicAuth("admin", "s3cret")
GOOD = {"Authorization": AUTH.header()}
NESTED = b'{"a":' * 50000 + b"1" + b"}" * 50000
ALERT = {"status": "firing", "alerts": [{"labels": {"function_name": "f.openfaas-fn"}}]}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def plugin(auth: BasicAuth | None = AUTH, controller: Any = None):
    return plugin_app(controller, Triggers(), auth=auth).test_client()


def scorer(auth: BasicAuth | None = AUTH):
    svc = ScoringService(ScorerConfig(db="memory"), MemoryBackend())
    return scorer_app(svc, auth=auth).test_client()


def _operations(doc: dict[str, Any]):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method.upper(), "security" in op


# ------------------------------------------------------------------ finding 3: the doors

@pytest.mark.parametrize("make, doc", [(plugin, plugin_openapi.document),
                                       (scorer, scorer_openapi.document)])
def test_documented_security_is_what_the_doors_do(make, doc) -> None:
    """Every operation the document marks basicAuth answers 401 JSON with WWW-Authenticate
    without credentials and with wrong ones; every other one lets a stranger in (and no
    state-changing or revealing operation is among those)."""
    client = make()
    ops = list(_operations(doc()))
    locked = {(p, m) for p, m, sec in ops if sec}
    assert locked, "nothing is locked"
    for path, method, secured in ops:
        for headers in ({}, {"Authorization": BasicAuth("admin", "wrong").header()},
                        {"Authorization": "Basic !!!"}):
            r = client.open(path, method=method, headers=headers, json={})
            if secured:
                assert r.status_code == 401, (path, method, r.status_code)
                assert r.headers["WWW-Authenticate"].startswith("Basic ")
                assert r.is_json and "basic-auth" in r.json["error"]
            else:
                assert r.status_code != 401, (path, method)
                assert method == "GET" and path in ("/healthz", "/livez", "/metrics",
                                                    "/openapi.json"), (path, method)


def test_the_plugin_locks_alerts_and_decisions_and_the_scorer_its_api() -> None:
    assert {(p, m) for p, m, s in _operations(plugin_openapi.document()) if s} == \
        {("/decisions", "GET"), ("/predictor", "GET"), ("/system/alert", "POST")}
    assert {(p, m) for p, m, s in _operations(scorer_openapi.document()) if s} == \
        {("/v1/score", "POST"), ("/v1/observe", "POST"), ("/v1/assign", "POST"), ("/", "GET")}


def test_with_the_credentials_the_doors_open() -> None:
    r = scorer().post("/v1/score", headers=GOOD, json={"job_type": "s",
                                                       "candidate_gpu_types": ["g"]})
    assert r.status_code == 200 and r.json["candidates"]
    r = plugin().post("/system/alert", headers=GOOD, data=b"[]")  # past the door: the parser
    assert r.status_code == 400


def test_no_password_no_service() -> None:
    with pytest.raises(webguard.AuthConfigError, match="basic_auth=false"):
        webguard.require(True, "admin", "", "quart-faas plugin")
    assert webguard.require(False, "admin", "", "quart-faas plugin") is None


def test_credentials_the_openfaas_way(tmp_path) -> None:
    (tmp_path / "basic-auth-user").write_text("ops\n")
    (tmp_path / "basic-auth-password").write_text("pw\n")
    assert webguard.credentials({"secret_mount_path": str(tmp_path)}) == ("ops", "pw")
    state = tmp_path / "state"
    state.mkdir()
    (state / "basic-auth-password").write_text("local\n")
    assert webguard.credentials({"QUART_STATE_DIR": str(state)}) == ("admin", "local")
    assert webguard.credentials({"QUART_STATE_DIR": str(tmp_path / "none")}) is None
    cfg = ScorerConfig.from_env({"secret_mount_path": str(tmp_path)})
    assert (cfg.user, cfg.password) == ("ops", "pw") and "pw" not in repr(cfg)
    assert "password" not in json.dumps(cfg.public()) and "ops" not in json.dumps(cfg.public())


def test_the_redis_password_stays_out_of_the_log() -> None:
    from gateway_plugin.config import redact

    assert redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# ------------------------------------------------------------------ finding 4: parsing

@pytest.mark.parametrize("body, needle", [
    (NESTED, "nested"),
    (b"[" * 40 + b"]" * 40, "nested 33 deep"),
    (b'{"status": "firing", "alerts": [{"labels": {"function_name": "\\ud800"}}]}',
     "lone surrogate"),
    (b'{"inputs": ["\\ud800"]}', "lone surrogate"),
    (b'{"\\udfff": 1}', "lone surrogate"),
    (b'\xed\xa0\x80', "not UTF-8"),
    (b'{"a": 1', "malformed JSON"),
])
def test_alert_bodies_that_were_500s_are_400s(body: bytes, needle: str) -> None:
    for client, path in ((plugin(), "/system/alert"), (scorer(), "/v1/score")):
        r = client.post(path, data=body, headers={**GOOD, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.is_json, (path, r.status_code, r.data[:200])
        assert needle in r.json["error"], r.json


def test_a_surrogate_pair_is_a_character_not_an_error() -> None:
    assert webguard.parse_json(b'{"s": "\\ud83d\\ude00"}') == {"s": "\U0001f600"}
    assert webguard.nesting_depth(json.loads("[" * 32 + "]" * 32)) == 32


def test_every_error_is_json_never_an_html_page() -> None:
    """404 and 405 (Werkzeug's own pages), and a 500 from an exception in a handler: a
    plugin whose controller is missing raises AttributeError in /healthz."""
    for client in (plugin(), scorer()):
        for r, code in ((client.get("/nope"), 404), (client.delete("/metrics"), 405)):
            assert r.status_code == code and r.is_json and r.json["error"], r.data[:200]
    r = plugin().get("/healthz")
    assert r.status_code == 500 and r.is_json and "AttributeError" in r.json["error"]


# ------------------------------------------------------------------ finding 3: pacing

def test_alerts_are_coalesced_into_one_cycle_per_interval() -> None:
    """200 webhooks at 10/s: the loop may run one alert cycle per interval (2 s here) on
    top of the timer's (every 5 s), never one per webhook."""
    clock = Clock()
    t = Triggers(period_s=5.0, min_interval_s=2.0, clock=clock)
    cycles: list[tuple[float, str, set[str] | None]] = []
    for i in range(200):
        clock.t = 1000.0 + i * 0.1
        in_s, _ = t.add({f"fn-{i % 3}"})
        assert 0 <= in_s <= 2.0
        step = t.due(clock.t)
        if step:
            cycles.append((clock.t, *step))
            t.done(step[0], clock.t)
    alerts = [c for c in cycles if c[1] == "alert"]
    timers = [c for c in cycles if c[1] == "timer"]
    # 20 s: timers at 0, 5, 10, 15; alert cycles at most every 2 s in between
    assert len(timers) == 4 and 5 <= len(alerts) <= 10, cycles
    assert all(b[0] - a[0] >= 2.0 - 1e-9 for a, b in zip(alerts, alerts[1:]))
    assert all(c[2] for c in alerts)  # each alert cycle carries the pooled names


def test_a_timer_cycle_serves_pending_alerts_and_a_lone_alert_runs_at_once() -> None:
    clock = Clock()
    t = Triggers(period_s=5.0, min_interval_s=5.0, clock=clock)
    assert t.due(clock.t) == ("timer", None)
    t.done("timer", clock.t)
    clock.t += 1
    assert t.add({"a"}) == (0.0, False)
    assert t.due(clock.t) == ("alert", {"a"})
    t.done("alert", clock.t)
    clock.t += 1
    in_s, coalesced = t.add({"b"})
    assert in_s == pytest.approx(3.0) and not coalesced  # the timer at +5 comes first
    assert t.add({"c"})[1] is True
    assert t.due(clock.t) is None
    clock.t += 3
    assert t.due(clock.t) == ("timer", None) and t.pending() == set()


# ------------------------------------------------------------------ finding 6: health

def test_health_is_not_ok_when_the_last_cycle_is_stale() -> None:
    clock = Clock()
    h = Health(period_s=2.0, clock=clock)
    assert h.report(True)[0]  # starting: the start counts as the last cycle
    clock.t += 6.5
    ok, body = h.report(True)
    assert not ok and "no control cycle since start" in body["problems"][0]
    h.cycled({"leader": True, "pipelines": 1})
    assert h.report(True) == (True, {"ok": True, "missing": [], "problems": [],
                                     "last_cycle_age_s": 0.0, "period_s": 2.0})
    clock.t += 6.0
    assert h.report(True)[0]  # exactly three periods: still ok
    h.failed("RuntimeError: boom")
    clock.t += 0.5
    ok, body = h.report(True)
    assert not ok and "6.5s ago" in body["problems"][0] and "boom" in body["problems"][0]
    assert h.stale(clock.t) == (True, 6.5)


@pytest.mark.parametrize("outcome, redis_up, missing", [
    ({"leader": True, "hold": True, "reason": "gateway unavailable: refused",
      "missing": "gateway"}, True, ["gateway"]),
    ({"leader": True, "hold": True, "reason": "metrics unavailable (x): holding",
      "missing": "prometheus"}, False, ["prometheus", "redis"]),
    ({"leader": False, "reason": "abc leads; standing by"}, False, ["redis"]),
])
def test_health_names_the_missing_input(outcome, redis_up, missing) -> None:
    h = Health(period_s=1.0, clock=Clock())
    h.cycled(outcome)
    ok, body = h.report(redis_up)
    assert not ok and body["missing"] == missing
    assert len(body["problems"]) == len(missing)
    h.cycled({"leader": True, "pipelines": 0, "reason": "no annotated pipelines"})
    assert h.report(True)[0]
