"""A request that never reached a replica is never failed, and a function at zero wakes up.

The first tests pin, on real loopback sockets, how an upstream error says whether the
request went out (``local_provider.delivery``); the others run the real provider with
real replica processes: kill -9 one of two replicas and send a burst at once (every call
must succeed: none was in flight at the kill), a replica whose port refuses while its
process lives on, and scale from zero.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3
from test_provider_helpers import Server, pid_alive, start_server, wait_for

from local_provider.delivery import (
    ReplicaConnection,
    RequestNotRead,
    delivery_pool,
    never_sent,
    refused,
)

ENV = {"QUART_QUEUE_TIMEOUT_S": "20", "QUART_STOP_GRACE_S": "1"}


# -- what an upstream error says, on real sockets ---------------------------------------

class RawServer:
    """A TCP server on a free loopback port that does ``serve(conn)`` with each connection."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._serve = serve
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                self._serve(conn)

    def close(self) -> None:
        self.sock.close()


def _read_request(conn: socket.socket) -> None:
    """Read one whole request (headers and Content-Length body), as waitress does before it
    calls the app."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                   if k.strip().lower() == b"content-length"), 0)
    while len(body) < length:
        body += conn.recv(4096)


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    made: list[RawServer] = []

    def make(serve: Callable[[socket.socket], None]) -> RawServer:
        made.append(RawServer(serve))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_refused_is_never_sent_and_means_the_server_is_gone() -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(urllib3.exceptions.HTTPError) as e:
        delivery_pool().request("POST", f"http://127.0.0.1:{port}/", body=b"x")
    assert never_sent(e.value) and refused(e.value)


def test_closed_unread_is_never_sent_and_retried_once_on_a_fresh_connection(raw) -> None:
    srv = raw(lambda conn: None)  # accept, close without reading: a replica dying
    with pytest.raises(urllib3.exceptions.HTTPError) as e:
        delivery_pool().request("POST", f"http://127.0.0.1:{srv.port}/", body=b"x",
                                timeout=5)
    assert never_sent(e.value) and not refused(e.value)  # the process may still be alive
    assert isinstance(e.value.reason, RequestNotRead)
    assert srv.accepted == 2  # urllib3's Retry tried a second, fresh connection


def test_read_then_closed_was_delivered_and_is_not_retried(raw) -> None:
    srv = raw(_read_request)  # the request was read, then the "replica" died: it may have run
    with pytest.raises(urllib3.exceptions.HTTPError) as e:
        delivery_pool().request("POST", f"http://127.0.0.1:{srv.port}/", body=b"x",
                                timeout=5)
    assert isinstance(e.value, urllib3.exceptions.ProtocolError)
    assert not never_sent(e.value) and srv.accepted == 1


@pytest.mark.parametrize("body", [b"x", None], ids=["post-body", "no-body"])
def test_a_stale_keep_alive_connection_is_told_from_a_delivered_request(raw, body) -> None:
    # The race urllib3's pre-use check cannot close: the server's FIN lands after the check,
    # before our request.  Plain urllib3 calls both cases "Remote end closed connection".
    # With a body, our second send meets the reset; without, the socket holds EPIPE.
    closed = threading.Event()

    def close_first(conn: socket.socket) -> None:
        conn.close()
        closed.set()

    srv = raw(close_first)
    for cls, expected in ((urllib3.connection.HTTPConnection, ConnectionError),
                          (ReplicaConnection, RequestNotRead)):
        closed.clear()
        conn = cls("127.0.0.1", srv.port, timeout=5)
        conn.connect()
        assert closed.wait(5)
        wait_for(lambda c=conn: not c.is_connected, 5, what="the FIN")
        try:  # headers, then body: the second send meets the reset, as under urllib3
            conn.request("POST", "/", body=body)
        except BrokenPipeError:
            pass  # urllib3 swallows it too, to read an answer sent before the reset
        with pytest.raises(expected):
            conn.getresponse()
        conn.close()
    delivered = raw(_read_request)
    conn = ReplicaConnection("127.0.0.1", delivered.port, timeout=5)
    conn.request("POST", "/", body=body)
    with pytest.raises(ConnectionError) as e:  # RemoteDisconnected: it may have run
        conn.getresponse()
    assert not isinstance(e.value, RequestNotRead)


# -- the provider, real replicas ----------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("failover"), env=ENV)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Replicas forked from a zygote by keys_manager, as in the soak and the demo."""
    s = start_server(tmp_path_factory.mktemp("failover-fork"),
                     env={**ENV, "QUART_LAUNCHER": "fork", "QUART_KEYS_METRICS_PORT": "0"})
    yield s
    assert s.stop() == 0


def _pids(server: Server, name: str, n: int) -> Counter[int]:
    """Which replicas answer ``name``: concurrent slow calls reach each of the ``n``."""
    with ThreadPoolExecutor(2 * n) as ex:
        rs = list(ex.map(lambda _: server.call(name, params={"sleep_ms": 150}), range(4 * n)))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    return Counter(r.json()["pid"] for r in rs)


def _burst(server: Server, name: str, n: int = 200) -> list:
    with ThreadPoolExecutor(16) as ex:
        return list(ex.map(lambda _: server.call(name), range(n)))


@pytest.mark.parametrize("launcher", ["process", "fork"])
def test_kill_9_then_a_burst_every_call_succeeds(launcher: str, request) -> None:
    """Old code: a few of the 200 got 502 (the dead replica's sockets close before its
    process is reaped: reset or refused while it still looked alive)."""
    server: Server = request.getfixturevalue("server" if launcher == "process" else "forked")
    name = f"kill9-{launcher}"
    server.deploy(name, 2)
    for _ in range(3):  # three kills: each was enough to fail the old code most of the time
        pids = _pids(server, name, 2)  # also leaves pooled keep-alive connections to both
        assert len(pids) == 2, pids
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        rs = _burst(server, name)
        codes = Counter(r.status_code for r in rs)
        assert codes == {200: len(rs)}, (codes, [r.text for r in rs if r.status_code != 200])
        assert victim not in {r.json()["pid"] for r in rs}
        server.wait_available(name, 2)
    assert "died" in server.log()


def test_kill_9_the_only_replica_calls_wait_for_its_replacement(server: Server) -> None:
    """No other replica: the calls wait in the queue for the new one (within the queue
    timeout) instead of failing."""
    server.deploy("lonely", 1)
    victim = next(iter(_pids(server, "lonely", 1)))
    os.kill(victim, signal.SIGKILL)
    rs = _burst(server, "lonely", 32)
    assert Counter(r.status_code for r in rs) == {200: 32}, [r.text for r in rs][:3]
    assert victim not in {r.json()["pid"] for r in rs}


def test_a_replica_that_refuses_while_alive_is_stopped_and_replaced(server: Server) -> None:
    """Old code: every call routed to it got 502 for as long as the process lived (it never
    died, so nothing replaced it)."""
    server.deploy("deaf", 2)
    victim = server.call("deaf", params={"close_listener": "1"}).json()["pid"]
    assert pid_alive(victim)
    # 16 at once: about 8 go to the deaf replica, which has 1 pooled keep-alive connection
    # (still served: only new connections are refused), so new ones are opened, and refused.
    rs = _burst(server, "deaf", 100)
    assert Counter(r.status_code for r in rs) == {200: 100}, [r.text for r in rs][:3]
    wait_for(lambda: not pid_alive(victim), 10, what="the deaf replica stopped")
    server.wait_available("deaf", 2)
    assert "refuses connections" in server.log()
    assert victim not in _pids(server, "deaf", 2)


def test_scale_from_zero_to_the_minimum_and_the_call_waits(server: Server) -> None:
    server.deploy("sleeper", 2)  # com.openfaas.scale.min=2
    server.api("POST", "/system/scale-function/sleeper", json={"replicas": 0})
    wait_for(lambda: (f := server.function("sleeper"))["availableReplicas"] == 0
             and not f["replicas"], 10, what="sleeper at zero")
    r = server.call("sleeper", data=b"wake up")  # old code: 504 after the queue timeout
    assert r.status_code == 200, r.text
    assert r.json()["body"] == "wake up"
    assert server.function("sleeper")["replicas"] == 2  # its minimum, as upstream does
    server.wait_available("sleeper", 2)
    assert "scale from zero" in server.log()
