"""Routing, queueing and replica replacement, against real replica processes.

The server runs with a tiny queue (2), short queue and upstream timeouts and a
small body limit, so every rejection path is reached in well under a second.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_provider_helpers import Server, parse_metrics, pid_alive, start_server, wait_for

from local_provider.router import FunctionPool, QueueFull, QueueTimeout, Replica, RouteError

ENV = {"QUART_QUEUE_SIZE": "2", "QUART_QUEUE_TIMEOUT_S": "1", "QUART_UPSTREAM_TIMEOUT_S": "2.5",
       "QUART_MAX_BODY_BYTES": "65536"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = start_server(tmp_path_factory.mktemp("routing"), env=ENV)
    yield s
    pids = s.replica_pids()
    assert pids, "expected running replicas before SIGTERM"
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)], "replicas left behind after SIGTERM"


# -- the router alone (pure object; replicas need only a non-None handle) -------------

class _Handle:
    pid, url, info = 0, "http://unused", {"tier": "none"}

    def alive(self) -> bool:
        return True

    def terminate(self, grace_s: float) -> None:
        pass


def _pool(n: int, max_inflight: int, queue_size: int = 8) -> tuple[FunctionPool, list[Replica]]:
    pool = FunctionPool("f", max_inflight, queue_size)
    reps = [Replica(index=i, generation=1, handle=_Handle()) for i in range(n)]
    for r in reps:
        pool.add(r)
        pool.set_ready(r)
    return pool, reps


def test_router_least_inflight_and_cap() -> None:
    pool, _ = _pool(3, 2)
    taken = [pool.acquire(0.1) for _ in range(6)]
    assert Counter(r.index for r in taken) == {0: 2, 1: 2, 2: 2}
    with pytest.raises(QueueTimeout):
        pool.acquire(0.05)
    pool.release(taken[0])
    assert pool.acquire(0.1) is taken[0]  # the only replica below the cap


def test_router_fifo_queue_bound_and_timeout() -> None:
    pool, _ = _pool(1, 1, queue_size=3)
    first = pool.acquire(0.1)
    order: list[int] = []

    def waiter(i: int) -> None:
        r = pool.acquire(5)
        order.append(i)
        time.sleep(0.01)
        pool.release(r)

    threads = []
    for i in range(3):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        wait_for(lambda n=i + 1: pool.snapshot()["queueDepth"] == n, 2)
    with pytest.raises(QueueFull):
        pool.acquire(1)
    pool.release(first)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]
    snap = pool.snapshot()
    assert snap["queueDepth"] == 0 and snap["inflight"] == 0 and snap["rejectedQueueFull"] == 1


def test_router_waits_for_a_replica_to_become_ready() -> None:
    pool = FunctionPool("f", 4, 4)
    r = Replica(index=0, generation=1, handle=_Handle())
    pool.add(r)
    threading.Timer(0.1, pool.set_ready, args=(r,)).start()
    t0 = time.monotonic()
    assert pool.acquire(2) is r
    assert 0.05 < time.monotonic() - t0 < 1.5


def test_a_release_wakes_the_head_of_the_queue_not_every_waiter() -> None:
    # 100 queued calls drained through one slot: each release wakes the next in line
    # (a notify_all woke all of them: ~5,000 wake-ups, each taking the GIL for nothing)
    pool, _ = _pool(1, 1, queue_size=128)
    first = pool.acquire(0.1)
    order: list[int] = []

    def waiter(i: int) -> None:
        r = pool.acquire(30)
        order.append(i)
        pool.release(r)

    threads = []
    for i in range(100):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        wait_for(lambda n=i + 1: pool.snapshot()["queueDepth"] == n, 5)
    pool.release(first)
    for t in threads:
        t.join(30)
    assert order == list(range(100))
    # one or two wake-ups per call (a head woken before the slot is free waits again)
    assert pool.wakeups <= 2 * 100 + 10, pool.wakeups


def test_freed_capacity_cascades_down_the_queue_and_close_wakes_everyone() -> None:
    pool = FunctionPool("f", 3, 16)
    r = Replica(index=0, generation=1, handle=_Handle())
    pool.add(r)
    got: list[Replica] = []
    gone: list[str] = []

    def waiter() -> None:
        try:
            got.append(pool.acquire(10))
        except RouteError as e:
            gone.append(type(e).__name__)

    threads = [threading.Thread(target=waiter) for _ in range(5)]
    for i, t in enumerate(threads):
        t.start()
        wait_for(lambda n=i + 1: pool.snapshot()["queueDepth"] == n, 2)
    pool.set_ready(r)  # three slots at once: one wake-up, then each head wakes the next
    wait_for(lambda: len(got) == 3, 2)
    pool.set_max_inflight(4)  # one more
    wait_for(lambda: len(got) == 4, 2)
    pool.close()  # the last one waiting is told the function is gone, not left to time out
    for t in threads:
        t.join(5)
    assert len(got) == 4 and gone == ["FunctionGone"]


# -- real replicas ----------------------------------------------------------------------

def test_least_inflight_spreads_concurrent_slow_calls(server: Server) -> None:
    server.deploy("spread", 3)
    with ThreadPoolExecutor(9) as ex:
        answers = list(ex.map(lambda _: server.call("spread", params={"sleep_ms": 400}),
                              range(9)))
    assert all(a.status_code == 200 for a in answers)
    per_replica = Counter(a.json()["pid"] for a in answers)
    assert sorted(per_replica.values()) == [3, 3, 3], per_replica
    assert {a.json()["hostname"] for a in answers} == {"spread-0", "spread-1", "spread-2"}


def test_queue_full_429_and_queue_timeout_504(server: Server) -> None:
    server.deploy("busy", 1, env={"max_inflight": "1"})
    before = parse_metrics(server.session.get(server.metrics + "/metrics").text)
    with ThreadPoolExecutor(4) as ex:
        slow = ex.submit(server.call, "busy", params={"sleep_ms": 1600})
        wait_for(lambda: _stats(server)["busy"]["inflight"] == 1, 5)
        queued = [ex.submit(server.call, "busy") for _ in range(2)]
        wait_for(lambda: _stats(server)["busy"]["queueDepth"] == 2, 5)
        full = server.call("busy")
        assert full.status_code == 429 and "queue" in full.json()["error"]
        timed_out = [f.result() for f in queued]
        assert slow.result().status_code == 200
    assert [r.status_code for r in timed_out] == [504, 504]
    assert all("error" in r.json() for r in timed_out)
    after = parse_metrics(server.session.get(server.metrics + "/metrics").text)
    fn = "busy.openfaas-fn"
    for reason, n in (("queue_full", 1), ("timeout", 2)):
        assert after.value("quart_function_rejected_total", function_name=fn, reason=reason) \
            - before.value("quart_function_rejected_total", function_name=fn, reason=reason) == n
    for code, n in (("200", 1), ("429", 1), ("504", 2)):
        assert after.value("gateway_function_invocation_total", function_name=fn, code=code) == n


def test_upstream_timeout_is_504(server: Server) -> None:
    server.deploy("slowpoke", 1)
    r = server.call("slowpoke", params={"sleep_ms": 4000})
    assert r.status_code == 504 and "QUART_UPSTREAM_TIMEOUT_S" in r.json()["error"]


def test_body_over_limit_is_413(server: Server) -> None:
    server.deploy("big", 1)
    assert server.call("big", data=b"x" * 65536).status_code == 200
    for base in (server.gateway, server.provider):
        r = server.call("big", data=b"x" * 65537, base=base)
        assert r.status_code == 413 and "error" in r.json(), r.text
    m = parse_metrics(server.session.get(server.metrics + "/metrics").text)
    assert m.value("gateway_function_invocation_total", function_name="big.openfaas-fn",
                   code="413") == 1


def test_status_and_headers_pass_through(server: Server) -> None:
    server.deploy("echo", 1)
    r = server.call("echo", "/sub/path?x=1&y=two", data=b'{"status": 418}',
                    headers={"X-Custom": "v", "Connection": "keep-alive, X-Hop", "X-Hop": "no"})
    assert r.status_code == 418
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Call-Id"] and 0 < float(r.headers["X-Duration-Seconds"]) < 30
    seen = r.json()
    assert seen["path"] == "/sub/path" and seen["query"] == {"x": "1", "y": "two"}
    assert seen["headers"]["X-Custom"] == "v" and "X-Hop" not in seen["headers"]
    assert seen["headers"]["X-Call-Id"] == r.headers["X-Call-Id"]
    assert server.call("echo.openfaas-fn", method="GET").status_code == 200
    assert server.call("echo", "/").json()["path"] == "/"  # no redirect either way
    assert server.call("echo", "", base=server.provider).json()["path"] == "/"
    assert server.call("echo.other-ns").status_code == 400
    assert server.call("echo", method="DELETE").json()["method"] == "DELETE"


def test_sigkill_under_load_replaces_replica(server: Server) -> None:
    server.deploy("victim", 2)
    stop = threading.Event()
    codes: list[tuple[float, int]] = []

    def load() -> None:
        while not stop.is_set():
            r = server.call("victim", params={"sleep_ms": 20})
            codes.append((time.monotonic(), r.status_code))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for t in workers:
        t.start()
    wait_for(lambda: len(codes) > 20, 10)
    pid = server.call("victim").json()["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # Replaced: two replicas available again, none of them the killed process.
    wait_for(lambda: pid not in _pids(server, "victim", 2), 20, what="replacement replica")
    server.wait_available("victim", 2)
    replaced_at = time.monotonic()
    time.sleep(0.5)
    stop.set()
    for t in workers:
        t.join(10)
    failed_late = [c for at, c in codes if at > replaced_at and c != 200]
    assert not failed_late, failed_late
    assert {c for at, c in codes if at < killed_at} == {200}
    assert {c for _, c in codes} <= {200, 502}
    assert "died" in server.log()


def test_crashing_request_is_502_and_replica_comes_back(server: Server) -> None:
    server.deploy("crashy", 1)
    r = server.call("crashy", params={"exit": "1"})
    assert r.status_code == 502 and "error" in r.json()
    server.wait_available("crashy", 1)
    wait_for(lambda: server.call("crashy").status_code == 200, 20, what="crashy back")


def _stats(server: Server) -> dict:
    return server.api("GET", "/system/quart/stats").json()


def _pids(server: Server, name: str, n: int) -> set[int]:
    """Distinct pids answering ``name`` (concurrent slow calls reach every replica)."""
    with ThreadPoolExecutor(n * 2) as ex:
        rs = list(ex.map(lambda _: server.call(name, params={"sleep_ms": 200}), range(n * 2)))
    return {r.json()["pid"] for r in rs if r.status_code == 200}
