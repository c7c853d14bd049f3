"""faas-provider's secrets and logs APIs on the local provider: real server, real replicas."""
from __future__ import annotations

import base64
import json
import stat
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from test_provider_helpers import ECHO, Server, pid_alive, start_server, wait_for

FOLLOW_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = start_server(tmp_path_factory.mktemp("secrets-logs"),
                     env={"QUART_LOG_FOLLOW_S": str(FOLLOW_S)})
    yield s
    pids = s.replica_pids()
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)], "replicas left behind after SIGTERM"


def _secret(server: Server, method: str, base: str | None = None, **body) -> requests.Response:
    return server.api(method, "/system/secrets", base=base, json=body)


def test_secrets_api_answers_like_faas_netes(server: Server) -> None:
    assert _secret(server, "POST", name="api-key", value="v1").status_code == 202
    r = _secret(server, "POST", name="api-key", value="v2")
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    assert _secret(server, "PUT", name="api-key", value="v2").status_code == 202
    assert _secret(server, "PUT", name="ghost", value="x").status_code == 404
    raw = bytes(range(256))
    assert _secret(server, "POST", base=server.provider, name="blob.bin", namespace="openfaas-fn",
                   rawValue=base64.b64encode(raw).decode()).status_code == 202
    listed = server.api("GET", "/system/secrets").json()
    assert listed == [{"name": "api-key", "namespace": "openfaas-fn"},
                      {"name": "blob.bin", "namespace": "openfaas-fn"}]
    store = server.state_dir / "secrets"
    assert (store / "api-key").read_text() == "v2" and (store / "blob.bin").read_bytes() == raw
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in store.iterdir()} == {0o600}
    for body, field in [({"name": "Bad_Name", "value": "x"}, "name"),
                        ({"name": "../etc", "value": "x"}, "name"),
                        ({"name": "ok"}, "value"), ({"name": "ok", "value": 5}, "value"),
                        ({"name": "ok", "rawValue": "%%%"}, "rawValue"),
                        ({"name": "ok", "value": "x", "namespace": "dev"}, "namespace")]:
        r = server.api("POST", "/system/secrets", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith(field + ":"), (body, r.text)
    assert server.api("GET", "/system/secrets?namespace=dev").status_code == 400
    assert requests.get(server.gateway + "/system/secrets").status_code == 401
    assert _secret(server, "DELETE", name="blob.bin").status_code == 202
    assert _secret(server, "DELETE", name="blob.bin").status_code == 404
    assert [s["name"] for s in server.api("GET", "/system/secrets").json()] == ["api-key"]


def test_a_function_sees_its_secrets_only(server: Server) -> None:
    for name, value in (("db-password", "hunter2"), ("other-team", "not yours")):
        _secret(server, "POST", name=name, value=value)
    r = server.api("POST", "/system/functions", json={
        "service": "needs-missing", "image": "x", "secrets": ["db-password", "nope"],
        "annotations": {"com.openfaas.quart.handler": str(ECHO)}})
    assert r.status_code == 400 and "nope" in r.json()["error"]
    server.deploy("vault", 1, secrets=["db-password"])
    ask = lambda name: server.call("vault", params={"secret": name}).json()["secret"]  # noqa: E731
    assert ask("db-password") == "hunter2"
    assert ask("other-team") is None  # not listed: not mounted
    _secret(server, "PUT", name="db-password", value="rotated")
    assert ask("db-password") == "rotated"  # like a mounted Kubernetes secret, no restart


def _logs(server: Server, base: str | None = None, **params) -> requests.Response:
    return server.api("GET", "/system/logs", base=base, params=params)


def _ndjson(r: requests.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def test_logs_are_the_replicas_output_in_faas_provider_format(server: Server) -> None:
    server.deploy("chatty", 2)
    t0 = datetime.now(UTC)
    for i in range(6):
        server.call("chatty", params={"log": f"line {i}"})
    want = {f"line {i}" for i in range(6)} | {f"err: line {i}" for i in range(6)}
    msgs = wait_for(lambda: (m := _ndjson(_logs(server, name="chatty")))
                    and want <= {x["text"] for x in m} and m, 10, what="the printed lines")
    for m in msgs:
        assert set(m) == {"name", "namespace", "instance", "timestamp", "text"}
        assert m["name"] == "chatty" and m["namespace"] == "openfaas-fn"
        assert m["instance"] in ("chatty-0", "chatty-1")
    ours = [m for m in msgs if m["text"] in want]
    stamps = [datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")) for m in ours]
    assert all(t0 - timedelta(seconds=1) <= t <= datetime.now(UTC) for t in stamps)
    assert stamps == sorted(stamps)
    assert any(m["text"].startswith("--- ") and "ready in" in m["text"] for m in msgs)

    assert _ndjson(_logs(server, name="chatty", tail=2)) == msgs[-2:]
    one = _ndjson(_logs(server, name="chatty", instance="chatty-1"))
    assert one and all(m["instance"] == "chatty-1" for m in one)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _ndjson(_logs(server, name="chatty", since=later)) == []
    via_provider = _ndjson(_logs(server, base=server.provider, name="chatty",
                                 namespace="openfaas-fn"))
    assert via_provider == msgs

    for params, field in (({}, "name"), ({"name": "chatty", "tail": "x"}, "tail"),
                          ({"name": "chatty", "since": "yesterday"}, "since"),
                          ({"name": "chatty", "namespace": "dev"}, "namespace")):
        r = _logs(server, **params)
        assert r.status_code == 400 and r.json()["error"].startswith(field + ":"), r.text
    assert _logs(server, name="ghost").status_code == 404
    unauthenticated = requests.get(server.gateway + "/system/logs", params={"name": "chatty"})
    assert unauthenticated.status_code == 401


def test_follow_streams_new_lines_until_the_deadline(server: Server) -> None:
    server.deploy("tailed", 1)
    # Ready (it answered /_/health) comes before its 'ready in' line is read from its log
    # file; wait for that line, so that tail=1 below is it.
    wait_for(lambda: any("ready in" in m["text"] for m in _ndjson(_logs(server, name="tailed"))),
             10, what="the 'ready in' line collected")
    got: list[dict] = []
    t0 = time.monotonic()

    def follow() -> None:
        with server.api("GET", "/system/logs", params={"name": "tailed", "follow": "true",
                                                        "tail": "1"}, stream=True) as r:
            for line in r.iter_lines():
                got.append(json.loads(line))

    t = threading.Thread(target=follow)
    t.start()
    wait_for(lambda: got, 5, what="the backlog line")  # tail=1: the 'ready' line
    assert len(got) == 1 and "ready in" in got[0]["text"]
    server.call("tailed", params={"log": "live"})
    wait_for(lambda: any(m["text"] == "live" for m in got), FOLLOW_S, what="the live line")
    t.join(FOLLOW_S + 5)
    assert not t.is_alive() and FOLLOW_S - 0.5 <= time.monotonic() - t0 <= FOLLOW_S + 5
    server.api("DELETE", "/system/functions", json={"functionName": "tailed"})
    assert _logs(server, name="tailed").status_code == 404  # removed with its function
