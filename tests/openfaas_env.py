"""The real OpenFaaS parts for tests: faas-cli, and the upstream gateway in front of our provider.

Binaries are found at ``QUART_OPENFAAS_BIN`` or ``<repo>/../shared/openfaas/bin``
(README there).  Where they are absent a test skips with the reason, except in
CI (``CI`` set), where it fails: CI is meant to have them.

The upstream gateway binds :8080 and :8082 with no setting to change them, so
it runs in its own network namespace (``unshare -rn``) and is reached through
Unix-socket relays (tests/netns_relay.py): nothing on this machine's 8080/8082
is touched, and any number of test runs can go side by side.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from test_provider_helpers import wait_for

from local_provider import prometheus, services
from tests.conftest import openfaas_bin as conftest_openfaas_bin

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "admin", "upstream-test-pw"


def openfaas_bin() -> Path:
    """The folder holding ``gateway`` and ``faas-cli`` (conftest's rule: skips only outside CI)."""
    conftest_openfaas_bin("faas-cli")
    return conftest_openfaas_bin("gateway").parent


def write_credentials(folder: Path) -> Path:
    """``secret_mount_path`` as the gateway (and faas-netes) read it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "basic-auth-user").write_text(USER)
    (folder / "basic-auth-password").write_text(PASSWORD)
    return folder


@dataclass
class FaasCli:
    """faas-cli with its own config folder (``faas-cli login`` writes there, not in ~)."""

    binary: Path
    gateway: str
    config_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, stdin: str | bytes | None = None, cwd: Path = REPO,
                 check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "OPENFAAS_URL": self.gateway,
               "OPENFAAS_CONFIG": str(self.config_dir), "NO_COLOR": "1"}
        data = stdin.encode() if isinstance(stdin, str) else stdin
        r = subprocess.run([str(self.binary), *args], cwd=cwd, env=env, input=data,
                           capture_output=True, timeout=timeout, check=False)
        out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                          r.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise AssertionError(f"faas-cli {' '.join(args)} exited {out.returncode}:\n"
                                 f"{out.stdout}\n{out.stderr}")
        return out

    def login(self) -> None:
        self("login", "-u", USER, "--password-stdin", stdin=PASSWORD)


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path = REPO) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env={**os.environ, **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Process(proc, log)


def serve(state: Path, role: str, env: dict[str, str] | None = None, cwd: Path = REPO
          ) -> tuple[Process, dict[str, str]]:
    """``quart-faas serve --role ROLE`` on free ports; returns it and its serve.json."""
    state.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "quart_faas.cli", "serve", "--role", role, "--gateway-port",
           "0", "--provider-port", "0", "--metrics-port", "0", "--state-dir", str(state)]
    # keys_manager's /metrics on any free port (its default 8083 may be taken by a neighbour)
    p = spawn(cmd, state / "serve.log", {"PYTHONUNBUFFERED": "1", "QUART_KEYS_METRICS_PORT": "0",
                                         **(env or {})}, cwd)

    def ready() -> dict[str, str] | None:
        if not p.alive():
            raise AssertionError(f"quart-faas serve exited:\n{p.log.read_text()}")
        try:
            urls = json.loads((state / "serve.json").read_text())
        except (OSError, ValueError):
            return None
        return urls if urls.get("pid") == p.proc.pid else None

    return p, wait_for(ready, 60, what="serve.json")


@dataclass
class UpstreamGateway:
    """The upstream gateway in its own network namespace, with Prometheus scraping it."""

    url: str
    metrics_url: str
    prometheus_url: str
    parts: list[Process]
    prometheus: services.Service
    state: Path
    sockets: Path

    def stop(self) -> None:
        for p in reversed(self.parts):
            p.stop()
        services.stop(self.state, self.prometheus)
        shutil.rmtree(self.sockets, ignore_errors=True)


def _relay(args: list[str], log: Path, netns: bool = False, env: dict[str, str] | None = None
           ) -> Process:
    cmd = [sys.executable, "-m", "tests.netns_relay", *args]
    return spawn((["unshare", "-rn"] if netns else []) + cmd, log, env)


def start_upstream_gateway(bin_dir: Path, provider_url: str, credentials: Path,
                           state: Path) -> UpstreamGateway:
    """gateway (netns) <-> relays <-> our provider; Prometheus first (the gateway's
    GET /system/functions dereferences a nil result when Prometheus does not answer)."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.fail("`unshare -rn` (a user + network namespace) is not permitted here; the "
                    "upstream gateway's fixed ports 8080/8082 need a namespace of their own")
    sockets = Path(tempfile.mkdtemp(prefix="qf-of-", dir="/tmp"))  # short: 108-byte sun_path
    gw_port, metrics_port, prom_port = (services.free_port() for _ in range(3))
    prov = provider_url.rstrip("/").rsplit(":", 1)[1]
    prom = prometheus.start(state, prom_port, {"openfaas-gateway": [f"127.0.0.1:{metrics_port}"]},
                            scrape_interval_s=1.0, name="prometheus-upstream")
    outside = _relay([f"--forward=tcp:127.0.0.1:{gw_port}=unix:{sockets}/gw.sock",
                      f"--forward=tcp:127.0.0.1:{metrics_port}=unix:{sockets}/metrics.sock",
                      f"--forward=unix:{sockets}/prov.sock=tcp:127.0.0.1:{prov}",
                      f"--forward=unix:{sockets}/prom.sock=tcp:127.0.0.1:{prom_port}"],
                     state / "relay-outside.log")
    env = {"functions_provider_url": "http://127.0.0.1:8081/", "basic_auth": "true",
           "secret_mount_path": str(credentials), "faas_prometheus_host": "127.0.0.1",
           "faas_prometheus_port": "9090", "read_timeout": "120s", "write_timeout": "120s",
           "upstream_timeout": "110s", "scale_from_zero": "true"}
    inside = _relay(["--lo-up", f"--forward=unix:{sockets}/gw.sock=tcp:127.0.0.1:8080",
                     f"--forward=unix:{sockets}/metrics.sock=tcp:127.0.0.1:8082",
                     "--forward=tcp:127.0.0.1:8081=unix:" + f"{sockets}/prov.sock",
                     "--forward=tcp:127.0.0.1:9090=unix:" + f"{sockets}/prom.sock",
                     "--", str(bin_dir / "gateway")], state / "gateway.log", netns=True, env=env)
    gw = UpstreamGateway(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{metrics_port}",
                         f"http://127.0.0.1:{prom_port}", [outside, inside], prom, state, sockets)
    def up() -> bool:
        for p in (outside, inside):
            if not p.alive():
                gw.stop()
                raise AssertionError(f"{p.log} exited:\n{p.log.read_text()[-3000:]}")
        try:
            return requests.get(gw.url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, 60, 0.2, what="the upstream gateway's /healthz")
    return gw
