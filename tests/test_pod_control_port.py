"""The control port (QUART_CONTROL_PORT, 8082): ``/_/quart/*`` served by a pod's zygote,
apart from the calls.

Real pods (the upstream fwatchdog in front of index.py in pod mode, each in its own
network namespace and CPU cgroup). Through the watchdog, a control call queues like a
function call: behind of-watchdog's max_inflight (429 once full) and the busy workers.
The regression: with every worker busy and max_inflight full, the control port still
answers GET, PUT and the metrics within a second.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from local_provider.pods import Pod, PodRunner
from tests.pod_env import AUTH, ECHO, make_runner, start_pod, wait_until
from tests.template_env import raw_http

SLOW_MS = 4000


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Iterator[PodRunner]:
    r = make_runner(tmp_path_factory.mktemp("pods"))
    yield r
    r.close()


@pytest.fixture()
def echo_pod(runner) -> Iterator[Pod]:
    """Two echo workers behind a watchdog that takes two calls at a time."""
    pod = start_pod(runner, f"ctl-{os.getpid()}", ECHO, {
        "QUART_PRELOAD": "", "QUART_POD_WORKERS": "2", "QUART_POD_MAX_WORKERS": "4",
        "max_inflight": "2"})
    yield pod
    pod.stop(2)


def timed(method: str, url: str, **kw) -> tuple[float, requests.Response | Exception]:
    t0 = time.monotonic()
    try:
        r: requests.Response | Exception = requests.request(method, url, timeout=3, **kw)
    except requests.RequestException as e:
        r = e
    return time.monotonic() - t0, r


def test_a_saturated_pod_answers_on_its_control_port_within_a_second(echo_pod):
    ctl = echo_pod.control_url
    assert urlsplit(ctl).port == 8082 and urlsplit(echo_pod.url).port == 8080
    with ThreadPoolExecutor(2) as ex:
        slow = [ex.submit(requests.get, echo_pod.url, params={"sleep_ms": SLOW_MS},
                          timeout=30) for _ in range(2)]
        t0 = time.monotonic()
        wait_until(lambda: requests.get(ctl + "/_/quart/workers", headers=AUTH,
                                        timeout=1).json()["busy"] == 2, 2, "both workers busy")
        # the old way in, through the watchdog: refused (max_inflight) or queued
        late, old = timed("GET", echo_pod.url + "/_/quart/workers", headers=AUTH)
        assert isinstance(old, Exception) or old.status_code == 429 or late > 1, (late, old)
        took, r = timed("GET", ctl + "/_/quart/workers", headers=AUTH)
        assert isinstance(r, requests.Response) and r.status_code == 200, r
        assert took < 1 and r.json()["busy"] == 2 and r.json()["ready"] == 2
        took, r = timed("GET", ctl + "/_/quart/metrics")
        assert isinstance(r, requests.Response) and r.status_code == 200, r
        assert took < 1 and "quart_pod_workers_busy 2.0" in r.text
        # the plugin's remedy, applied at once: a third worker while two are busy
        took, r = timed("PUT", ctl + "/_/quart/workers", json={"workers": 3}, headers=AUTH)
        assert isinstance(r, requests.Response) and r.status_code == 200, r
        assert took < 1 and r.json()["ready"] == 3 and r.json()["busy"] == 2
        assert time.monotonic() - t0 < SLOW_MS / 1000  # all of it while the calls ran
        assert all(f.result().status_code == 200 for f in slow)


def test_control_port_checks_callers_and_bodies(echo_pod):
    url = echo_pod.control_url + "/_/quart/workers"
    r = requests.get(url, timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.put(url, json={"workers": 3}, headers={"Authorization": "Bearer x"},
                        timeout=5).status_code == 401
    for bad in (b"{oops", b"", b'{"workers": 0}', b'{"workers": 9}', b'{"workers": "3"}'):
        r = requests.put(url, data=bad, headers=AUTH, timeout=5)
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/json", bad
        assert r.json()["error"]
    r = requests.delete(url, headers=AUTH, timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, PUT"
    assert requests.get(echo_pod.control_url + "/", timeout=5).status_code == 404
    r = requests.head(echo_pod.control_url + "/_/quart/metrics", timeout=5)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) > 0 and not r.content
    assert requests.get(url, headers=AUTH, timeout=5).json()["workers"] == 2


def raw(pod: Pod, data: bytes, wait_s: float = 5) -> bytes:
    u = urlsplit(pod.control_url)
    return raw_http(str(u.hostname), int(u.port or 80), data, wait_s)


def test_control_port_refuses_what_is_not_a_small_request(echo_pod):
    """Said in JSON with a 4xx, and a silent connection does not hold up the others
    (the zygote serves them all in one loop)."""
    host, port = urlsplit(echo_pod.control_url).hostname, urlsplit(echo_pod.control_url).port
    with socket.create_connection((host, port), timeout=5):  # says nothing
        for data, status in ((b"nonsense\r\n\r\n", b"400"),
                             (b"GET /_/quart/metrics HTTP/1.1\r\nX: " + b"a" * 9000, b"431"),
                             (b"PUT /_/quart/workers HTTP/1.1\r\nTransfer-Encoding: chunked"
                              b"\r\n\r\n", b"411"),
                             (b"PUT /_/quart/workers HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
                              b"413")):
            t0 = time.monotonic()
            out = raw(echo_pod, data)
            assert out.startswith(b"HTTP/1.1 " + status) and b'{"error": ' in out, out[:300]
            assert time.monotonic() - t0 < 1


def test_only_the_zygote_listens_on_the_control_port(echo_pod):
    """A forked worker closes the zygote's control socket: it never holds connections."""
    zygote = requests.get(echo_pod.control_url + "/_/quart/workers", headers=AUTH,
                          timeout=5).json()["pid"]
    out = subprocess.run(["nsenter", f"--net=/run/netns/{echo_pod.net.netns}", "ss", "-Hltnp",
                          "sport = :8082"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    assert f"pid={zygote}," in out and out.count("pid=") == 1, out


@pytest.fixture()
def tokenless_pod(runner) -> Iterator[Pod]:
    pod = start_pod(runner, f"ctl-nt-{os.getpid()}", ECHO,
                    {"QUART_PRELOAD": "", "QUART_POD_WORKERS": "1"}, token=None)
    yield pod
    pod.stop(2)


def test_no_token_file_no_control_on_the_port_either(tokenless_pod):
    for method in ("GET", "PUT"):
        r = requests.request(method, tokenless_pod.control_url + "/_/quart/workers",
                             json={"workers": 1}, headers=AUTH, timeout=5)
        assert r.status_code == 404 and "quart-control-token" in r.json()["error"]
    assert requests.get(tokenless_pod.control_url + "/_/quart/metrics", timeout=5).ok
    assert requests.get(tokenless_pod.url, timeout=5).status_code == 200
