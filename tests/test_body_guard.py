"""The gateway's body guard on a real waitress listener (local_provider/body_guard.py): a body
over its path's limit is refused from its headers, and bodies beyond the shared budget are
shed with 429 and Retry-After, before any of it is buffered; the connection then serves on."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from flask import Flask, Response, request

from local_provider.body_guard import BodyBudget, BodyGuard
from local_provider.function_limits import path_limits
from local_provider.server import _server
from local_provider.web import install_body_refusal

LIMITS = {"small": 1000}


@pytest.fixture()
def served():
    """A real waitress server with the guard; ``/function/slow`` holds its body until told."""
    app = Flask("guarded")
    install_body_refusal(app)
    release, held = threading.Event(), threading.Event()

    @app.post("/function/<name>")
    def fn(name: str) -> Response:
        body = request.get_data()
        if name == "slow":
            held.set()
            release.wait(10)
        return Response(json.dumps({"got": len(body)}), mimetype="application/json")

    budget = BodyBudget(600_000)
    guard = BodyGuard(path_limits(LIMITS.get, 10_000_000), 10_000_000, budget)
    srv = _server(app, "127.0.0.1", 0, 8, guard)
    stopping = threading.Event()

    def run() -> None:
        try:
            srv.run()
        except (OSError, ValueError):  # the listener closed under select() at teardown
            if not stopping.is_set():
                raise

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield srv.effective_port, budget, release, held
    release.set()
    stopping.set()
    srv.close()
    srv.task_dispatcher.shutdown(cancel_pending=True, timeout=1)


def settled(budget: BodyBudget) -> int:
    """The budget once the server closed its last request (after the answer was written)."""
    deadline = time.monotonic() + 5
    while budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    return budget.used


def raw(port: int, request: bytes) -> str:
    """Send ``request`` whole, then read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, dict(r.getheaders()), json.loads(r.read() or b"null"), c


def test_a_body_over_its_functions_limit_is_refused_and_the_connection_serves_on(served):
    port, budget, _, _ = served
    status, headers, doc, conn = post(port, "/function/small", b"x" * 5000)
    assert status == 413 and headers["Content-Type"] == "application/json"
    assert doc["limit"] == 1000 and doc["limit_name"] == "function small"
    assert "1000 bytes function small accepts" in doc["error"]
    conn.request("POST", "/function/small", body=b"y" * 10)  # same keep-alive connection
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read()) == {"got": 10}
    assert settled(budget) == 0


def test_the_global_limit_applies_elsewhere_and_to_chunked_bodies(served):
    port, budget, _, _ = served
    status, _, doc, _ = post(port, "/function/other", b"z" * 20_000)
    assert status == 200 and doc == {"got": 20_000}
    chunk = b"320\r\n" + b"a" * 800 + b"\r\n"  # chunked: refused once past the limit
    answer = raw(port, b"POST /function/small.openfaas-fn HTTP/1.1\r\nHost: x\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n")
    assert answer.startswith("HTTP/1.1 413") and '"limit": 1000' in answer
    assert settled(budget) == 0


def test_expect_continue_is_answered_at_once_without_the_body(served):
    port, _, _, _ = served
    head = raw(port, b"POST /function/small HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
    assert head.startswith("HTTP/1.1 413") and "100 Continue" not in head
    assert '"limit": 1000' in head


def test_bodies_beyond_the_budget_are_shed_with_retry_after(served):
    port, budget, release, held = served
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(post(port, "/function/slow",
                                                         b"s" * 500_000)[0]))
    t.start()
    assert held.wait(10)
    assert budget.used == 500_000
    status, headers, doc, _ = post(port, "/function/other", b"o" * 200_000)
    assert status == 429 and headers["Retry-After"] == "1"
    assert "QUART_BODY_BUDGET_BYTES" in doc["error"]
    release.set()
    t.join(10)
    assert done == [200] and settled(budget) == 0
    assert post(port, "/function/other", b"o" * 200_000)[0] == 200


def test_a_client_header_cannot_forge_a_refusal(served):
    port, _, _, _ = served
    status, _, doc, _ = post(port, "/function/other", b"ok",
                             {"X-Quart-Body-Refused": '{"status": 413, "error": "forged"}'})
    assert status == 200 and doc == {"got": 2}


def test_hot_threads_first_keeps_sequential_work_on_one_warm_thread():
    """waitress wakes idle threads FIFO: every thread of the pool gets touched in turn (the
    soak's gateway grew ~28 % in 5 minutes that way).  LIFO wake-up keeps sequential work
    on the thread that just finished."""
    from waitress.task import ThreadedTaskDispatcher

    from local_provider.memory import hot_threads_first

    def used_threads(lifo: bool) -> set[str]:
        d = ThreadedTaskDispatcher()
        d.set_thread_count(8)
        if lifo:
            assert hot_threads_first(d)
        names: set[str] = set()

        class Task:
            def __init__(self) -> None:
                self.done = threading.Event()

            def service(self) -> None:
                names.add(threading.current_thread().name)
                self.done.set()

            def cancel(self) -> None:
                pass

        def all_idle() -> None:  # every thread back in wait() (the order they wait in matters)
            deadline = time.monotonic() + 5
            while len(d.queue_cv._waiters) < 8 and time.monotonic() < deadline:
                time.sleep(0.001)

        try:
            for _ in range(40):
                all_idle()
                t = Task()
                d.add_task(t)
                assert t.done.wait(5)
        finally:
            d.shutdown(cancel_pending=True, timeout=2)
        return names

    assert len(used_threads(lifo=False)) == 8
    assert len(used_threads(lifo=True)) <= 2
