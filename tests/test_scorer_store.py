"""The scorer's state across restarts and outages: a real redis-server, SQLite, and the
real service (waitress in a thread; ``python -m scorer`` in a process)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.basic_auth import BasicAuth
from local_provider import services
from scorer import cli
from scorer.app import create_app
from scorer.config import ScorerConfig
from scorer.service import ScoringService
from scorer.store import RedisBackend, SqliteBackend, StoreError
from scorer.validate import ObserveRequest, ScoreRequest
from tests.redis_env import RedisServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rs(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def teach(svc: ScoringService) -> None:
    for y in (0.20, 0.22, 0.21):
        svc.observe(ObserveRequest("stage-1", "a100", y))
    svc.observe(ObserveRequest("stage-1", "a100", 0.3, ["stage-2"]))
    for _ in range(8):
        svc.score(ScoreRequest("stage-1", ["a100", "l4"]))


def state(svc: ScoringService) -> tuple:
    m = svc.model
    slow = {k: v.s for k, v in m.slowdowns.get("stage-1", {}).items()}
    return m.belief("stage-1", "a100"), slow, m.counters(), m.window.dump_bits()


def test_redis_state_survives_a_restart(rs):
    cfg = ScorerConfig(db="redis", redis_url=rs.url, redis_prefix="t:",
                       enable_interference=True)
    a = ScoringService(cfg, RedisBackend(rs.url, "t:"))
    teach(a)
    assert a.status()["store_up"] and a.status()["unsaved_changes"] == 0
    before = state(a)
    assert before[1] == {"stage-2": pytest.approx(0.3 / 0.21 - 1, rel=0.05)}
    assert before[2] == {"decisions": 8, "exploratory": 2, "capped": 6, "observations": 4}
    r = rs.client()
    assert set(r.keys("t:*")) == {b"t:posteriors", b"t:slowdowns", b"t:counters", b"t:window",
                                  b"t:schema"}
    assert json.loads(r.hget("t:posteriors", '["stage-1","a100"]'))["n"] == 3
    b = ScoringService(cfg, RedisBackend(rs.url, "t:"))  # the process restarted
    assert state(b) == before
    b.score(ScoreRequest("stage-1", ["a100", "l4"]))
    assert b.model.counters()["decisions"] == 9  # counters continue
    other = ScoringService(cfg, RedisBackend(rs.url, "other:"))  # prefixes do not mix
    assert other.model.pairs() == 0


def test_redis_outage_serves_from_memory_and_writes_back(rs):
    cfg = ScorerConfig(db="redis", redis_url=rs.url, redis_prefix="t:")
    now = [0.0]
    svc = ScoringService(cfg, RedisBackend(rs.url, "t:"), clock=lambda: now[0])
    c = create_app(svc, auth=None).test_client()
    rs.stop()
    r = c.post("/v1/observe", json={"job_type": "s", "gpu_type": "g", "measured_runtime_s": 2.0})
    assert r.status_code == 200 and r.json["persisted"] is False
    h = c.get("/healthz")
    assert h.status_code == 200 and h.json["store_up"] is False
    assert "unreachable" in h.json["message"] and h.json["unsaved_changes"] > 0
    assert c.post("/v1/score", json={"job_type": "s", "candidate_gpu_types": ["g"]}).status_code \
        == 200
    back = RedisServer(rs.root, port=rs.port).start()  # empty: the test server keeps no files
    try:
        now[0] += 60  # past the backoff
        assert svc.sync() and c.get("/healthz").json["store_up"] is True
        client = back.client()
        assert json.loads(client.hget("t:posteriors", '["s","g"]'))["mu"] == 2.0
        assert client.hget("t:counters", "decisions") == b"1"
    finally:
        back.stop()


class Flaky:
    """A real backend that can be made to fail, to start a service while it is down."""

    def __init__(self, inner) -> None:
        self.inner, self.down = inner, True
        self.name, self.persistent = inner.name, True

    def load(self):
        if self.down:
            raise StoreError("down")
        return self.inner.load()

    def save(self, snap):
        if self.down:
            raise StoreError("down")
        self.inner.save(snap)


def test_store_down_at_start_replays_on_top_of_what_it_holds(rs):
    cfg = ScorerConfig(db="redis", redis_url=rs.url, redis_prefix="t:")
    earlier = ScoringService(cfg, RedisBackend(rs.url, "t:"))
    for _ in range(5):
        earlier.observe(ObserveRequest("s", "g", 1.0))
    earlier.score(ScoreRequest("s", ["g"]))
    flaky = Flaky(RedisBackend(rs.url, "t:"))
    now = [0.0]
    svc = ScoringService(cfg, flaky, clock=lambda: now[0])
    svc.observe(ObserveRequest("s", "g", 1.0))  # served from an empty memory model
    svc.score(ScoreRequest("s", ["g"]))
    st = svc.status()
    assert not st["state_loaded"] and st["pending_events"] == 2 and "since start" in st["message"]
    flaky.down, now[0] = False, 100.0
    assert svc.sync()
    assert svc.model.belief("s", "g").n == 6  # 5 from the earlier run + 1 replayed
    assert svc.model.counters() == {"decisions": 2, "exploratory": 0, "capped": 0,
                                    "observations": 6}
    again = ScoringService(cfg, RedisBackend(rs.url, "t:"))
    assert again.model.belief("s", "g").n == 6 and again.model.counters()["decisions"] == 2


def test_sqlite_backend_survives_a_restart(tmp_path):
    cfg = ScorerConfig(db="sqlite", db_path=str(tmp_path / "s" / "scorer.sqlite3"),
                       enable_interference=True)
    a = ScoringService(cfg, SqliteBackend(cfg.db_path))
    teach(a)
    before = state(a)
    a.backend.close()
    b = ScoringService(cfg, SqliteBackend(cfg.db_path))
    assert state(b) == before


PASSWORD = "scorer-s3cret"
AUTH = {"Authorization": BasicAuth("admin", PASSWORD).header()}  # the service's doors


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=5) as r:
        return r.status, r.read()


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **AUTH})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_real_waitress_server_score_observe_score(rs):
    cfg = ScorerConfig(db="redis", redis_url=rs.url, redis_prefix="w:",
                       port=services.free_port(), password=PASSWORD)
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=cli.run, args=(cfg, stop, lambda port: ready.set()), daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        base = f"http://127.0.0.1:{cfg.port}"
        body = {"job_type": "stage-1", "features": {}, "candidate_gpu_types": ["a100", "l4"],
                "colocated_job_types": []}
        first = post(base + "/v1/score", body)["candidates"]
        for y in (0.2, 0.21, 0.19):
            post(base + "/v1/observe", {"job_type": "stage-1", "gpu_type": "a100",
                                        "measured_runtime_s": y, "colocated_job_types": []})
        after = {c["gpu_type"]: c for c in post(base + "/v1/score", body)["candidates"]}
        assert after["a100"]["sigma"] < first[0]["sigma"]
        status, text = get(base + "/metrics")
        samples = {s.name: s.value for f in text_string_to_metric_families(text.decode())
                   for s in f.samples}
        assert status == 200 and samples["scheduler_decisions_total"] == 2
        assert json.loads(get(base + "/healthz")[1])["store_up"] is True
        with pytest.raises(urllib.error.HTTPError) as e:
            post(base + "/v1/observe", {"job_type": "stage-1"})
        assert e.value.code == 422
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_module_process_restarts_with_its_state(rs, tmp_path):
    """``python -m scorer``: SIGTERM, start again, the counters continue."""
    port = services.free_port()
    (tmp_path / "basic-auth-password").write_text(PASSWORD + "\n")
    env = {**os.environ, "REDIS_URL": rs.url, "SCHEDULER_REDIS_PREFIX": "p:",
           "SCHEDULER_EXPLORATION_CAP": "0.5", "PYTHONPATH": str(REPO),
           "QUART_BASIC_AUTH_PASSWORD_FILE": str(tmp_path / "basic-auth-password")}
    base = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "scorer", "--port", str(port)],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if get(base + "/healthz")[0] == 200:
                    return p
            except OSError:
                time.sleep(0.05)
        p.kill()
        raise AssertionError(p.communicate()[1].decode())

    p = start()
    try:
        assert json.loads(get(base + "/")[1])["config"]["SCHEDULER_EXPLORATION_CAP"] == 0.5
        post(base + "/v1/observe", {"job_type": "s", "gpu_type": "g", "measured_runtime_s": 3.0})
        post(base + "/v1/score", {"job_type": "s", "candidate_gpu_types": ["g"]})
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    p = start()
    try:
        d = post(base + "/v1/score", {"job_type": "s", "candidate_gpu_types": ["g"]})
        assert d["candidates"][0]["observations"] == 1 and d["candidates"][0]["mu"] == 3.0
        text = get(base + "/metrics")[1].decode()
        assert "scheduler_decisions_total 2.0" in text
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0


def test_cli_rejects_bad_settings(monkeypatch, capsys):
    monkeypatch.setenv("SCHEDULER_EXPLORATION_CAP", "2")
    assert cli.main([]) == 2
    assert "SCHEDULER_EXPLORATION_CAP" in capsys.readouterr().err
