"""The real services the fuzzer talks to, each started on free loopback ports.

Why real processes: a fuzzer must see what a client sees (the production
server, its error handlers, its threads), and a crash must be visible as a
dead process or a traceback in its log, not hidden in a test client.

``Fleet(root, names)`` starts what the named services need and nothing more:

  gateway, provider, metrics   one ``python -m local_provider`` (process launcher, no torch),
                               with one deployed function, ``fuzz-target`` (the relay fixture:
                               answers 200 to anything)
  plugin                       ``python -m gateway_plugin`` on a real redis-server, acting on
                               that gateway (no Prometheus: the loop degrades, the API serves)
  scorer                       ``python -m scorer`` on the same redis-server
                               (both take the gateway's credentials, as their doors do)
  keys                         ``python -m keys_manager`` (its /metrics, /healthz listener)
  stage                        template/quart-python/index.py serving stage 0 of a partitioned
                               all-MiniLM-L6-v2 (functions/stage): text in, activations out to
                               ``fuzz-target`` through that gateway, its answer relayed
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests

from contracts.names import ANN_HANDLER
from local_provider import services

REPO = Path(__file__).resolve().parents[1]
RELAY = REPO / "tests" / "fixtures" / "relay"
TEMPLATE = REPO / "template" / "quart-python"
TARGET_FUNCTION = "fuzz-target"
PASSWORD = "fuzz-" + uuid.uuid4().hex[:12]
NAMES = ("gateway", "provider", "metrics", "plugin", "scorer", "keys", "stage")
NEEDS = {"gateway": {"lp"}, "provider": {"lp"}, "metrics": {"lp"},
         "plugin": {"lp", "redis", "plugin"}, "scorer": {"redis", "scorer"},
         "keys": {"keys"}, "stage": {"lp", "stage"}}


@dataclass
class Proc:
    """A process we started, in its own session so that stopping it stops its children."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, grace_s: float = 20.0) -> None:
        if self.popen.poll() is None:
            _killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _killpg(self.popen.pid, signal.SIGKILL)  # whatever of the group is left
        self.popen.wait()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@dataclass
class Target:
    """One HTTP API to fuzz."""

    name: str
    url: str
    proc: Proc
    auth: tuple[str, str] | None = None
    doc_path: str = "/openapi.json"
    health_path: str = "/healthz"
    prepare: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda d: d)

    def alive(self) -> bool:
        return self.proc.popen.poll() is None

    def healthy(self) -> bool:
        try:
            return requests.get(self.url + self.health_path, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def document(self) -> dict[str, Any]:
        r = requests.get(self.url + self.doc_path, timeout=10)
        r.raise_for_status()
        return self.prepare(r.json())

    def tracebacks(self) -> list[str]:
        """Unhandled errors the process logged (a crash in a thread is still a crash)."""
        text = self.proc.log.read_text(errors="replace") if self.proc.log.exists() else ""
        return tracebacks(text)


def tracebacks(text: str) -> list[str]:
    """Each Python traceback in a log, as "exception (innermost frame)", once per kind."""
    found: dict[str, None] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        j, frame = i + 1, ""
        while j < len(lines) and (lines[j].startswith(" ") or not lines[j]):
            if lines[j].lstrip().startswith("File "):
                frame = lines[j].strip()
            j += 1
        found[f"{lines[j] if j < len(lines) else '?'} ({frame})"] = None
    return list(found)


def with_target_function(doc: dict[str, Any]) -> dict[str, Any]:
    """Let ``functionName`` of an invocation or a status read be the deployed function as
    well as anything else: random names alone would only ever reach the 404 branch.
    (Scaling it stays with random names: at 0 replicas every call would wait for a replica
    until the queue timeout, a 504 by design.)  A deployment body may also be one of the
    deployed function with its real handler folder, so that an update (PUT) is accepted and
    rolls or relimits it; any other name keeps random folders, refused before a replica
    starts."""
    schemas = doc["components"]["schemas"]
    target = copy.deepcopy(schemas["FunctionDeployment"])
    target["properties"]["service"] = {"type": "string", "enum": [TARGET_FUNCTION]}
    target["properties"]["annotations"] = {
        "type": "object", "required": [ANN_HANDLER], "additionalProperties": {"type": "string"},
        "properties": {ANN_HANDLER: {"type": "string", "enum": [str(RELAY)]}}}
    schemas["TargetDeployment"] = target
    schemas["FunctionDeployment"] = {"anyOf": [{"$ref": "#/components/schemas/TargetDeployment"},
                                               schemas["FunctionDeployment"]]}
    for path, item in doc.get("paths", {}).items():
        if not path.startswith(("/function/", "/system/function/")):
            continue
        for op in item.values():
            for p in op.get("parameters", []):
                if p["name"] == "functionName":
                    p["schema"] = {"anyOf": [{"type": "string", "enum": [TARGET_FUNCTION]},
                                             p["schema"]]}
    return doc


class Fleet:
    """Start the processes behind ``names``; ``stop()`` ends them (process groups)."""

    def __init__(self, root: Path, names: list[str], model_dir: Path | None = None,
                 plugin_env: dict[str, str] | None = None) -> None:
        unknown = set(names) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown service(s) {sorted(unknown)}; known: {', '.join(NAMES)}")
        self.root = root
        self.names = list(names)
        self.model_dir = model_dir
        self.plugin_env = plugin_env or {}
        self.state = root / "state"
        self.started: list[Proc] = []
        self.targets: dict[str, Target] = {}

    def _start(self, name: str, cmd: list[str], env: dict[str, str]) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def _target(self, name: str, proc: Proc, url: str, **kw: Any) -> None:
        self.targets[name] = Target(name, url, proc, **kw)

    def start(self, timeout_s: float = 120) -> dict[str, Target]:
        need = set().union(*(NEEDS[n] for n in self.names))
        self.root.mkdir(parents=True, exist_ok=True)
        pw = self.root / "password"
        pw.write_text(PASSWORD + "\n")
        py = sys.executable
        waits: list[tuple[str, Proc, Callable[[], bool]]] = []
        ports = {k: services.free_port() for k in ("redis", "gateway", "plugin", "scorer",
                                                   "keys", "stage")}
        redis_url = self.redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
        gateway_url = self.gateway_url = f"http://127.0.0.1:{ports['gateway']}"
        if "stage" in need:  # first: the slowest to start (torch + the model)
            waits.append(self._start_stage(ports["stage"], gateway_url))
        if "lp" in need:
            lp = self._start("local_provider", [
                py, "-m", "local_provider", "--gateway-port", str(ports["gateway"]),
                "--provider-port", "0", "--metrics-port", "0", "--state-dir", str(self.state),
                "--auth-password-file", str(pw)],
                {"QUART_LAUNCHER": "process", "QUART_PRELOAD": "", "QUART_MAX_REPLICAS": "2",
                 "QUART_START_TIMEOUT_S": "20", "QUART_QUEUE_TIMEOUT_S": "10"})
            waits.append(("local_provider", lp, lambda: self._provider_ready(lp)))
        if "redis" in need:
            redis = self._start("redis", [shutil.which("redis-server") or "redis-server",
                                          "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no",
                                          "--dir", str(self.root)], {})
            waits.append(("redis", redis, lambda: _redis_up(redis_url)))
        if "scorer" in need:
            svc = self._start("scorer", [py, "-m", "scorer"], {
                "SCHEDULER_DB": "redis", "REDIS_URL": redis_url,
                "SCHEDULER_PORT": str(ports["scorer"]),
                "QUART_BASIC_AUTH_PASSWORD_FILE": str(pw)})
            url = f"http://127.0.0.1:{ports['scorer']}"
            self._target("scorer", svc, url, auth=("admin", PASSWORD))
            waits.append(("scorer", svc, partial(services.answers, url + "/healthz")))
        if "keys" in need:
            waits.append(self._start_keys(ports["keys"]))
        if "plugin" in need:  # the plugin copes with a gateway still starting
            waits.append(self._start_plugin(ports["plugin"]))
        self._wait(waits, timeout_s)
        return self.targets

    def _start_stage(self, port: int, gateway_url: str) -> tuple[str, Proc, Callable[[], bool]]:
        """A MiniLM stage 0 whose next stage is the relay function, through the gateway."""
        model = self.model_dir or partition(self.root / "minilm-2")
        stages = json.loads((model / "manifest.json").read_text())["num_stages"]
        svc = self._start("stage", [sys.executable, str(TEMPLATE / "index.py")], {
            "QUART_HANDLER_DIR": str(REPO / "functions" / "stage"),
            "QUART_MODEL_DIR": str(model), "QUART_STAGE": "0",
            "QUART_NEXT_FUNCTION": TARGET_FUNCTION if stages > 1 else "",
            "QUART_GATEWAY_URL": gateway_url, "QUART_FORWARD_TIMEOUT_S": "20",
            "QUART_LISTEN_PORT": str(port), "QUART_MAX_INPUTS": "8",
            "QUART_MAX_INPUT_CHARS": "2000", "HOSTNAME": "fuzz-stage",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        url = f"http://127.0.0.1:{port}"
        self._target("stage", svc, url, doc_path="/_/openapi.json", health_path="/_/health")
        return "stage", svc, partial(services.answers, url + "/_/health")

    def _start_keys(self, port: int) -> tuple[str, Proc, Callable[[], bool]]:
        svc = self._start("keys_manager", [sys.executable, "-m", "keys_manager"], {
            "QUART_KEYS_SOCKET": str(self.root / "km.sock"),
            "QUART_KEYS_DIR": str(self.root / "keys"),
            "QUART_SHM_DIR": f"/dev/shm/quart-fuzz-{uuid.uuid4().hex[:8]}",
            "QUART_MEMORY_THRESHOLD": "64MiB", "QUART_KEYS_METRICS_PORT": str(port),
            "QUART_KEYS_SCRUB_S": "0"})
        url = f"http://127.0.0.1:{port}"
        self._target("keys", svc, url)
        return "keys", svc, partial(services.answers, url + "/healthz")

    def _wait(self, waits: list[tuple[str, Proc, Callable[[], bool]]],
              timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while waits:
            for item in list(waits):
                name, svc, ready = item
                if svc.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited while starting:\n"
                                       f"{svc.log.read_text(errors='replace')[-3000:]}")
                if ready():
                    waits.remove(item)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout_s:g}s: {[n for n, _, _ in waits]}")
            time.sleep(0.1)

    def _provider_ready(self, lp: Proc) -> bool:
        try:
            urls = json.loads((self.state / "serve.json").read_text())
        except (OSError, ValueError):
            return False
        if urls.get("pid") != lp.popen.pid or \
                not services.answers(urls["gateway_url"] + "/healthz"):
            return False
        auth = ("admin", PASSWORD)
        r = requests.post(urls["provider_url"] + "/system/functions", auth=auth, timeout=10, json={
            "service": TARGET_FUNCTION, "image": "relay:fuzz",
            "envVars": {"QUART_SLEEP_MS": "0", "QUART_NEXT_FUNCTION": ""},
            "annotations": {"com.openfaas.quart.handler": str(RELAY)}})
        if r.status_code not in (202, 409):
            raise RuntimeError(f"deploying {TARGET_FUNCTION} failed: {r.status_code} {r.text}")
        for name, key in (("gateway", "gateway_url"), ("provider", "provider_url")):
            if name in self.names:
                self._target(name, lp, urls[key], auth=auth, prepare=with_target_function)
        if "metrics" in self.names:
            self._target("metrics", lp, urls["metrics_url"])
        return _wait_available(urls["provider_url"], auth)

    def _start_plugin(self, port: int) -> tuple[str, Proc, Callable[[], bool]]:
        svc = self._start("plugin", [sys.executable, "-m", "gateway_plugin"], {
            "OPENFAAS_URL": self.gateway_url,
            "PROMETHEUS_URL": f"http://127.0.0.1:{services.free_port()}",
            "REDIS_URL": self.redis_url,
            "QUART_BASIC_AUTH_PASSWORD_FILE": str(self.root / "password"),
            "QUART_PLUGIN_PORT": str(port), "QUART_CONTROL_PERIOD_S": "2",
            "QUART_TRAIN_EVERY": "0", **self.plugin_env})
        url = f"http://127.0.0.1:{port}"
        self._target("plugin", svc, url, auth=("admin", PASSWORD))
        return "plugin", svc, lambda: services.answers(url + "/healthz")

    def stop(self) -> None:
        for proc in reversed(self.started):  # all at once: each drains on its own
            if proc.popen.poll() is None:
                _killpg(proc.popen.pid, signal.SIGTERM)
        for proc in reversed(self.started):
            proc.stop()

    def __enter__(self) -> dict[str, Target]:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait_available(provider_url: str, auth: tuple[str, str]) -> bool:
    r = requests.get(f"{provider_url}/system/function/{TARGET_FUNCTION}", auth=auth, timeout=5)
    return r.status_code == 200 and r.json()["availableReplicas"] >= 1


def partition(out: Path) -> Path:
    """all-MiniLM-L6-v2 in two stages; the fuzzer talks to stage 0 (text in, activations out
    to the next function)."""
    if not (out / "manifest.json").exists():
        from functions.partitioner import partition as cut

        cut(out, 2, model="all-MiniLM-L6-v2")
    return out
