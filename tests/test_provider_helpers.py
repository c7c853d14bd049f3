"""Shared helpers of the local provider tests: a real server process on free ports.

Not a conftest.py on purpose (tests/conftest.py belongs to the model tests);
the test modules import from here.  Nothing is mocked: ``python -m
local_provider`` runs as a subprocess and replicas are real processes of the
tests/fixtures/echo handler, started with ``QUART_PRELOAD=""`` (no torch).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
ECHO = REPO / "tests" / "fixtures" / "echo"
PASSWORD = "s3cret-test-pw"


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0, every_s: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def deployment(name: str, env: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """A FunctionDeployment of the echo handler, as `quart-faas up` would send it."""
    body: dict[str, Any] = {
        "service": name,
        "image": f"ttl.sh/test/{name}:latest",
        "envVars": {"QUART_PRELOAD": "", **(env or {})},
        "annotations": {"com.openfaas.quart.handler": str(ECHO)},
    }
    body.update(extra)
    return body


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    urls: dict[str, Any]
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def front(self) -> str:
        """Where API calls go: the gateway, or the provider of a provider-only server."""
        return self.urls.get("gateway_url") or self.urls["provider_url"]

    @property
    def gateway(self) -> str:
        return self.urls["gateway_url"]

    @property
    def provider(self) -> str:
        return self.urls["provider_url"]

    @property
    def metrics(self) -> str:
        return self.urls["metrics_url"]

    @property
    def auth(self) -> tuple[str, str]:
        return ("admin", PASSWORD)

    def api(self, method: str, path: str, base: str | None = None, **kw: Any) -> requests.Response:
        kw.setdefault("auth", self.auth)
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        return self.session.request(method, (base or self.front) + path, **kw)

    def call(self, name: str, path: str = "", base: str | None = None,
             **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        kw.setdefault("allow_redirects", False)  # an invocation is never redirected
        method = kw.pop("method", "POST")
        return requests.request(method, f"{base or self.gateway}/function/{name}{path}", **kw)

    def function(self, name: str) -> dict[str, Any]:
        r = self.api("GET", f"/system/function/{name}")
        assert r.status_code == 200, r.text
        return r.json()

    def deploy(self, name: str, replicas: int = 1, env: dict[str, str] | None = None,
               wait: bool = True, **extra: Any) -> None:
        labels = {"com.openfaas.scale.min": str(replicas)}
        body = deployment(name, env, labels=labels, **extra)
        r = self.api("POST", "/system/functions", json=body)
        assert r.status_code == 202, r.text
        if wait:
            self.wait_available(name, replicas)

    def wait_available(self, name: str, n: int, timeout_s: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (f := self.function(name))["availableReplicas"] == n
                        and f["replicas"] == n and f, timeout_s, what=f"{name} at {n} replicas")

    def replica_pids(self) -> list[int]:
        return children_of(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"server ignored SIGTERM for {timeout_s}s:\n{self.log()}") from None


def start_server(tmp: Path, env: dict[str, str] | None = None, role: str = "all",
                 args: list[str] | None = None, name: str = "server") -> Server:
    """Run ``python -m local_provider`` on free ports; wait for serve.json and /healthz."""
    state = tmp / name
    state.mkdir(parents=True, exist_ok=True)
    pw = tmp / "password"
    pw.write_text(PASSWORD + "\n")
    log_path = state / "server.log"
    # These tests pin the provider's own behaviour (routing, queueing, drain, crash handling)
    # with child-process replicas, whose pids they can read as the provider's children; the
    # default fork launcher is exercised by test_keys_pipeline and test_pipeline_e2e.
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "QUART_LAUNCHER": "process",
                **(env or {})}
    cmd = [sys.executable, "-m", "local_provider", "--role", role, "--gateway-port", "0",
           "--provider-port", "0", "--metrics-port", "0", "--state-dir", str(state),
           "--auth-password-file", str(pw), *(args or [])]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=logf, stderr=subprocess.STDOUT)
    serve_json = state / "serve.json"

    def ready() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log_path.read_text()}")
        try:
            urls = json.loads(serve_json.read_text())
        except (OSError, ValueError):
            return None
        return urls if urls.get("pid") == proc.pid else None

    urls = wait_for(ready, 30, what="serve.json")
    server = Server(proc, state, urls, log_path)
    health = urls.get("gateway_url") or urls["provider_url"]
    wait_for(lambda: requests.get(health + "/healthz", timeout=1).ok, 10, what="/healthz")
    return server


# -- Prometheus text format ------------------------------------------------------------

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Exposition:
    types: dict[str, str]
    helps: dict[str, str]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def parse_metrics(text: str) -> Exposition:
    """Strict parse: every line is HELP, TYPE or a well-formed sample."""
    types, helps, samples = {}, {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("# HELP "):
            _, _, name, text_ = line.split(" ", 3)
            helps[name] = text_
        else:
            m = SAMPLE_RE.match(line)
            assert m, f"malformed sample line: {line!r}"
            labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
            samples[(m.group(1), labels)] = float(m.group(4))
    return Exposition(types, helps, samples)
