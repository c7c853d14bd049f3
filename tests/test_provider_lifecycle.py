"""Replica lifecycle: drain on scale-down, start timeout, SIGKILL after the grace period,
and shutdown while replicas are still starting."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from test_provider_helpers import ECHO, Server, pid_alive, start_server, wait_for

ENV = {"QUART_START_TIMEOUT_S": "2", "QUART_DRAIN_TIMEOUT_S": "4", "QUART_STOP_GRACE_S": "1"}


def slow(delay_s: float = 0, ignore_term: bool = False) -> dict[str, str]:
    """envVars of an echo replica that starts slowly and/or ignores SIGTERM."""
    return {"QUART_PRELOAD": "slow_start", "PYTHONPATH": str(ECHO),
            "ECHO_START_DELAY_S": str(delay_s), "ECHO_IGNORE_SIGTERM": "1" if ignore_term else ""}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = start_server(tmp_path_factory.mktemp("lifecycle"), env=ENV)
    yield s
    pids = s.replica_pids()
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)], "replicas left behind after SIGTERM"


def test_scale_down_drains_in_flight_calls(server: Server) -> None:
    server.deploy("drained", 1)
    results = []
    t = threading.Thread(target=lambda: results.append(
        server.call("drained", params={"sleep_ms": 1500})))
    t.start()
    wait_for(lambda: server.api("GET", "/system/quart/stats").json()["drained"]["inflight"] == 1,
             5)
    pid = server.replica_pids()
    assert server.api("POST", "/system/scale-function/drained",
                      json={"replicas": 0}).status_code == 202
    wait_for(lambda: server.function("drained")["availableReplicas"] == 0, 5)
    t.join(10)
    assert results[0].status_code == 200, results[0].text  # finished despite the scale-down
    wait_for(lambda: all(not pid_alive(p) for p in pid), 10, what="drained replica to exit")


def test_replica_not_healthy_in_time_is_killed_and_retried_with_backoff(server: Server) -> None:
    server.deploy("hung", 1, env=slow(delay_s=60), wait=False)
    wait_for(lambda: "not healthy after 2s" in server.log(), 10, what="start timeout")
    wait_for(lambda: "failed start(s) in a row" in server.log(), 5)
    assert server.function("hung")["availableReplicas"] == 0
    server.api("DELETE", "/system/functions", json={"functionName": "hung"})


def test_replica_ignoring_sigterm_is_killed_after_grace(server: Server) -> None:
    server.deploy("stubborn", 1, env=slow(ignore_term=True))
    pid = server.call("stubborn").json()["pid"]
    t0 = time.monotonic()
    server.api("POST", "/system/scale-function/stubborn", json={"replicas": 0})
    wait_for(lambda: not pid_alive(pid), 10, what="SIGKILL of the stubborn replica")
    assert 1.0 <= time.monotonic() - t0 < 8  # QUART_STOP_GRACE_S=1, then SIGKILL
    assert "ignored SIGTERM" in server.log()


def test_sigterm_while_replicas_start_leaves_nothing(tmp_path_factory) -> None:
    s = start_server(tmp_path_factory.mktemp("starting"), env=ENV)
    s.deploy("late", 2, env=slow(delay_s=30, ignore_term=True), wait=False)
    wait_for(lambda: len(s.replica_pids()) == 2, 10, what="2 starting replicas")
    pids = s.replica_pids()
    assert s.function("late")["availableReplicas"] == 0
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)]


def test_serve_embedded_with_stop_event(tmp_path, monkeypatch) -> None:
    """The CLI's way: serve(config, role) in-process; here stopped by an Event, not a signal."""
    import json
    import socket

    import requests
    from test_provider_helpers import PASSWORD, deployment

    from local_provider.config import ServeConfig
    from local_provider.replicas import ProcessLauncher
    from local_provider.server import serve

    # the default (fork) launcher starts keys_manager: never on its default port 8083, which
    # a neighbour may hold (keys_manager then exits and no replica ever starts)
    monkeypatch.setenv("QUART_KEYS_METRICS_PORT", "0")
    (tmp_path / "pw").write_text(PASSWORD)
    cfg = ServeConfig.from_env({}, gateway_port=0, provider_port=0, metrics_port=0,
                               state_dir=str(tmp_path / "st"),
                               auth_password_file=str(tmp_path / "pw"))
    # A port in use is an OSError, and nothing stays bound or running: not the listeners
    # bound before it, not their request threads, not the launcher.
    closed: list[bool] = []

    class Launcher(ProcessLauncher):
        def close(self) -> None:
            closed.append(True)

    threads = set(threading.enumerate())
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with pytest.raises(OSError):
        serve(replace(cfg, gateway_port=busy.getsockname()[1]), launcher=Launcher())
    busy.close()
    assert closed == [True]
    left = set(threading.enumerate()) - threads
    for th in left:  # told to stop: give them a moment to get there
        th.join(5)
    assert [th.name for th in left if th.is_alive()] == []

    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(serve(cfg, "all", stop=stop)))
    t.start()
    try:  # a failure below must still stop serve(): its thread would keep pytest from exiting
        urls = wait_for(lambda: (tmp_path / "st" / "serve.json").is_file()
                        and json.loads((tmp_path / "st" / "serve.json").read_text()), 10)
        auth = ("admin", PASSWORD)
        r = requests.post(urls["gateway_url"] + "/system/functions", json=deployment("emb"),
                          auth=auth)
        assert r.status_code == 202
        answer = wait_for(lambda: (r := requests.post(urls["gateway_url"] + "/function/emb",
                                                      data=b"x")).ok and r.json(), 20)
        assert answer["body"] == "x"
    finally:
        stop.set()
        t.join(20)
    assert result == [0]
    assert not pid_alive(answer["pid"])
    assert not (tmp_path / "st" / "serve.json").exists()
