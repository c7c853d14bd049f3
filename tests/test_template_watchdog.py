"""The real upstream of-watchdog (http mode) in front of the template's index.py.

The binary is the one CI has beside the checkout (<repo>/../shared/openfaas/bin/fwatchdog,
or $QUART_OPENFAAS_BIN/fwatchdog).  fwatchdog always serves its metrics on :8081 (no
setting moves it: of-watchdog's config.go hard-codes MetricsPort) and panics when that port
is taken, so each watchdog runs in a network namespace of its own (root: ``unshare --net``),
where 8080, 8081 and the upstream's 5000 are free by construction; the test talks to it from
a thread that joined that namespace (setns), so nothing binds on the machine's ports.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import SENTENCES, openfaas_bin, require_tool, skip_outside_ci
from tests.template_env import REPO, SHAPES, SHAPES_HANDLER, check_shape, shrinkwrap

CLONE_NEWNET = 0x40000000


def fwatchdog() -> Path:
    """The upstream watchdog; it always binds :8081, so it runs in its own network namespace,
    which needs root (CI runs as root), unshare and ip."""
    exe = openfaas_bin("fwatchdog")
    require_tool("unshare"), require_tool("ip")
    if os.geteuid() != 0:
        skip_outside_ci("a network namespace per watchdog needs root")
    return exe


class Watchdog:
    """fwatchdog + ``python index.py`` in a fresh network namespace; HTTP calls from inside."""

    def __init__(self, exe: Path, build: Path, env: dict[str, str], tmp: Path) -> None:
        self.tmp, self.log = tmp, tmp / "watchdog.log"
        full = {**os.environ, **env, "mode": "http", "port": "8080",
                "upstream_url": "http://127.0.0.1:5000", "QUART_LISTEN_PORT": "5000",
                "fprocess": f"{sys.executable} index.py", "TMPDIR": str(tmp),  # its .lock
                "exec_timeout": "60s", "read_timeout": "60s", "write_timeout": "60s",
                "WATCHDOG_LOG": str(self.log)}
        for k in ("QUART_HANDLER_DIR", "QUART_LISTEN_FD", "QUART_ZYGOTE_SOCKET", "max_inflight"):
            full.pop(k, None)
        # "up" on stdout once the namespace exists with its loopback up; then the watchdog
        # replaces the shell, its output going to the log
        script = 'ip link set lo up && echo up && exec "$0" >>"$WATCHDOG_LOG" 2>&1'
        self.proc = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", script,
                                      str(exe)], cwd=build, env=full,
                                     stdout=subprocess.PIPE, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line == b"up\n", f"no network namespace: {line!r} {self.tail()}"
        self.netns = f"/proc/{self.proc.pid}/ns/net"
        self.ns = os.readlink(self.netns)  # its identity, to find its processes at the end
        self.pool = ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self) -> None:
        fd = os.open(self.netns, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.netns}")
        finally:
            os.close(fd)

    def call(self, method: str, path: str, port: int = 8080, **kw) -> requests.Response:
        """One request from inside the namespace (a new connection each time)."""
        kw.setdefault("timeout", 60)
        url = f"http://127.0.0.1:{port}{path}"
        return self.pool.submit(requests.request, method, url, **kw).result()

    def wait_for(self, path: str, timeout: float = 180) -> None:
        """Until the function answers 200 through the watchdog (it listens, and writes its
        lock file, before the upstream has loaded the handler)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"fwatchdog exited: {self.tail()}"
            try:
                if self.call("GET", path, timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered 200: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def close(self) -> None:
        """Kill every process of the namespace (the watchdog and the index.py it forked)."""
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                and _netns_of(p) == self.ns]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.pool.shutdown()


def _netns_of(proc: Path) -> str | None:
    try:
        return os.readlink(proc / "ns" / "net")
    except OSError:
        return None


@pytest.fixture(scope="session")
def exe() -> Path:
    """Asked for first (and session-wide, as st_reference is), so that a skip comes before
    any model is loaded or partitioned."""
    return fwatchdog()


@pytest.fixture(scope="module")
def minilm1(exe, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 as a single stage: stage 0 answers the embeddings."""
    from functions.partitioner import partition

    out = tmp_path_factory.mktemp("models") / "minilm-1"
    partition(out, 1, model="all-MiniLM-L6-v2")
    return out


@pytest.fixture(scope="module")
def shapes_watchdog(exe, tmp_path_factory) -> Iterator[Watchdog]:
    tmp = tmp_path_factory.mktemp("wd-shapes")
    wd = Watchdog(exe, shrinkwrap(tmp, SHAPES_HANDLER), {"QUART_PRELOAD": ""}, tmp)
    try:
        wd.wait_for("/?shape=str")
        yield wd
    finally:
        wd.close()


def test_stage_behind_the_real_watchdog_equals_sentence_transformers(exe, tmp_path, minilm1,
                                                                      st_reference):
    wd = Watchdog(exe, shrinkwrap(tmp_path, REPO / "functions" / "stage"),
                  {"QUART_MODEL_DIR": str(minilm1), "QUART_STAGE": "0"}, tmp_path)
    try:
        wd.wait_for("/")
        info = wd.call("GET", "/").json()
        assert (info["stage"], info["stages"], info["next"]) == (0, 1, None)
        health = wd.call("GET", "/_/health")
        assert health.status_code == 200 and health.text == "OK"
        assert (tmp_path / ".lock").exists()  # what the Dockerfile's HEALTHCHECK looks for
        r = wd.call("POST", "/", json={"inputs": SENTENCES})
        assert r.status_code == 200, r.text[:500]
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Server-Timing"].startswith("stage0;dur=")
        assert "X-Duration-Seconds" in r.headers  # the watchdog's own: it was in the path
        import torch

        emb = torch.tensor(r.json()["embeddings"])
        assert emb.shape == st_reference.shape
        assert (emb - st_reference).abs().max().item() <= 1e-5
        bad = wd.call("POST", "/", data=b"{oops", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
        metrics = wd.call("GET", "/metrics", port=8081).text  # inside the namespace only
        assert 'http_requests_total{code="200",method="post"}' in metrics
    finally:
        wd.close()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_result_shape_through_the_watchdog(shapes_watchdog, shape):
    check_shape(shape, shapes_watchdog.call("POST", "/", params={"shape": shape}, data=b"in"))


def test_two_watchdogs_at_once_each_with_its_metrics_port(exe, shapes_watchdog, tmp_path):
    """The namespaces are what let a second watchdog (and the provider API's default 8081)
    coexist: each binds :8081 in its own."""
    other = Watchdog(exe, shrinkwrap(tmp_path, SHAPES_HANDLER), {"QUART_PRELOAD": ""}, tmp_path)
    try:
        other.wait_for("/?shape=str")
        check_shape("str", other.call("GET", "/", params={"shape": "str"}))
        assert other.call("GET", "/metrics", port=8081).status_code == 200
        assert shapes_watchdog.call("GET", "/_/health").text == "OK"
    finally:
        other.close()
