"""The replica's lean HTTP server (template/quart-python/lean_http.py), as index.py runs it.

What waitress and Flask did for the template must still happen: kept-alive connections,
chunked and ``Expect: 100-continue`` bodies, HEAD and OPTIONS, 405 with ``Allow``, a 500
for a handler that raises; bad requests get a 4xx and the replica serves the next one;
``/_/health`` answers while every handler slot is busy.
"""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.template_env import REPO, SHAPES_HANDLER, raw_http, shrinkwrap

ECHO = REPO / "tests" / "fixtures" / "echo"


def _start(tmp, handler, **env) -> tuple[subprocess.Popen, int, socket.socket]:
    build = shrinkwrap(tmp, handler)
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    e = {**os.environ, "QUART_PRELOAD": "", "QUART_LISTEN_FD": str(sock.fileno()), **env}
    e.pop("QUART_HANDLER_DIR", None)
    e.pop("QUART_HTTP_SERVER", None)  # the default: the lean server
    proc = subprocess.Popen([sys.executable, "index.py"], cwd=build, env=e,
                            pass_fds=(sock.fileno(),), stderr=subprocess.PIPE)
    return proc, sock.getsockname()[1], sock


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> Iterator[int]:
    proc, port, sock = _start(tmp_path_factory.mktemp("echo"), ECHO, max_inflight="1")
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()
        sock.close()
        proc.stderr.close()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Iterator[tuple[int, subprocess.Popen]]:
    proc, port, sock = _start(tmp_path_factory.mktemp("shapes"), SHAPES_HANDLER)
    try:
        yield port, proc
    finally:
        proc.kill()
        proc.wait()
        sock.close()
        proc.stderr.close()


def _raw(port: int, data: bytes) -> bytes:
    return raw_http("127.0.0.1", port, data)


def test_one_connection_carries_many_requests(echo):
    c = http.client.HTTPConnection("127.0.0.1", echo, timeout=10)
    c.request("POST", "/a", body=b"one")
    first = c.getresponse()
    assert first.status == 200 and b"one" in first.read()
    sock = c.sock
    for i in range(5):
        c.request("POST", "/b?x=1", body=f"n{i}".encode())
        r = c.getresponse()
        assert r.status == 200 and f"n{i}".encode() in r.read()
    assert c.sock is sock  # not reconnected: the server kept the connection


def test_chunked_and_expect_continue_bodies(echo):
    out = _raw(echo, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"abcdefg" in out
    with socket.create_connection(("127.0.0.1", echo), timeout=10) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"hello")
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200") and b"hello" in rest


@pytest.mark.parametrize("request_bytes,status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nbad header line\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
])
def test_bad_requests_get_a_4xx_and_the_replica_serves_on(echo, request_bytes, status):
    out = _raw(echo, request_bytes)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:100]
    c = http.client.HTTPConnection("127.0.0.1", echo, timeout=10)
    c.request("GET", "/_/health")
    assert c.getresponse().read() == b"OK"


def test_methods_as_flask_answered_them(echo):
    c = http.client.HTTPConnection("127.0.0.1", echo, timeout=10)
    c.request("HEAD", "/x")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"" and int(r.getheader("Content-Length")) > 0
    c.request("OPTIONS", "/x")
    r = c.getresponse()
    r.read()
    assert r.status == 200 and "POST" in r.getheader("Allow")
    c.request("TRACE", "/x")
    r = c.getresponse()
    r.read()
    assert r.status == 405 and "GET" in r.getheader("Allow")
    c.request("POST", "/_/health", body=b"x")
    r = c.getresponse()
    r.read()
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"


def test_a_handler_that_raises_is_a_500_and_the_next_call_is_served(shapes):
    port, proc = shapes
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/?shape=no-such-shape", body=b"")  # the handler's KeyError
    r = c.getresponse()
    assert r.status == 500 and b"Internal Server Error" in r.read()
    c.request("POST", "/?shape=plain_dict", body=b"")
    r = c.getresponse()
    assert r.status == 200 and b'"answer":' in r.read()


def test_health_answers_while_every_handler_slot_is_busy(echo):
    """max_inflight=1 and a call sleeping 3 s: the probe is not queued behind it."""
    done = threading.Event()

    def slow() -> None:
        c = http.client.HTTPConnection("127.0.0.1", echo, timeout=30)
        c.request("POST", "/?sleep_ms=3000", body=b"")
        c.getresponse().read()
        done.set()

    threading.Thread(target=slow, daemon=True).start()
    time.sleep(0.3)
    c = http.client.HTTPConnection("127.0.0.1", echo, timeout=10)
    c.request("GET", "/_/health")
    assert c.getresponse().read() == b"OK"
    assert not done.is_set()  # the health answer did not wait for the slow call
    assert done.wait(30)


def test_connections_past_the_cap_wait_in_the_backlog(tmp_path):
    """QUART_MAX_CONNECTIONS=2: two idle kept connections fill it, a third call waits until
    one of them closes, then is answered (not refused, not lost)."""
    proc, port, sock = _start(tmp_path, ECHO, QUART_MAX_CONNECTIONS="2")
    try:
        held = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
        for c in held:
            c.request("GET", "/_/health")
            assert c.getresponse().read() == b"OK"
        third = socket.create_connection(("127.0.0.1", port), timeout=1)
        third.sendall(b"GET /_/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with pytest.raises(TimeoutError):
            third.recv(100)
        held[0].close()
        third.settimeout(10)
        assert third.recv(100).startswith(b"HTTP/1.1 200")
        third.close()
    finally:
        proc.kill()
        proc.wait()
        sock.close()
        proc.stderr.close()
