"""``quart-faas up`` / ``down``: the embedded stack on this machine, deployed like faas-cli.

``up`` starts the local gateway + provider (and Prometheus) in the background
only when nothing answers at the gateway URL, then deploys every function of
the stack through ``/system/functions`` exactly as ``faas-cli deploy`` does:
PUT, and POST when the PUT answers 404.  Everything is checked before the
first request, so a bad stack leaves no partial deployment.

A stack may hold several pipelines (annotation ``com.openfaas.quart.pipeline``);
``up`` deploys one of them: the first in the file unless ``pipeline`` names
another or is "all", so adding a pipeline to stack.yml does not change what
``quart-faas up -f stack.yml`` starts (faas-cli users pick with ``--filter``).
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from contracts.manifest import has_manifest
from contracts.names import ANN_PIPELINE
from contracts.stack import Stack, StackError, load_stack, min_replicas
from local_provider import cleanup, images, prometheus, services
from local_provider.build import entries as build_entries

USER = "admin"


def select_pipeline(stack: Stack, pipeline: str | None) -> Stack:
    """The stack restricted to one pipeline (None: the first one; "all": every function).
    Functions that belong to no pipeline are always kept."""
    names = [f.annotations.get(ANN_PIPELINE) for f in stack.functions.values()]
    known = list(dict.fromkeys(n for n in names if n))
    if pipeline == "all" or not known:
        return stack
    want = pipeline or known[0]
    if want not in known:
        raise DeployError(f"no pipeline {want!r} in {stack.path.name}; it has {known} (or all)")
    keep = {k: f for k, f in stack.functions.items()
            if f.annotations.get(ANN_PIPELINE) in (None, "", want)}
    return Stack(stack.path, stack.gateway, keep)


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and why."""


def password_file(state_dir: Path) -> Path:
    """The basic-auth password, generated once (mode 0600) like the gateway's secret."""
    path = Path(state_dir) / "basic-auth-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path


@dataclass
class Endpoints:
    gateway: str
    provider_port: int
    metrics_port: int
    prometheus: str
    keys_metrics_port: int = 8083

    @property
    def keys_metrics(self) -> str:
        host = urlparse(self.gateway).hostname or "127.0.0.1"
        return f"http://{host}:{self.keys_metrics_port}"

    @property
    def metrics(self) -> str:
        host = urlparse(self.gateway).hostname or "127.0.0.1"
        return f"http://{host}:{self.metrics_port}"


def endpoints(gateway: str, provider_port: int | None = None, metrics_port: int | None = None,
              prometheus_url: str = "http://127.0.0.1:9090",
              keys_metrics_port: int | None = None) -> Endpoints:
    port = urlparse(gateway).port or 8080
    return Endpoints(gateway.rstrip("/"), provider_port or port + 1, metrics_port or port + 2,
                     prometheus_url.rstrip("/"), keys_metrics_port or port + 3)


def start_local(state_dir: Path, ep: Endpoints, say: Callable[[str], None]) -> None:
    """Start gateway + provider (and Prometheus) unless something already answers."""
    if not services.answers(f"{ep.gateway}/healthz"):
        host = urlparse(ep.gateway).hostname or "127.0.0.1"
        gport = urlparse(ep.gateway).port or 8080
        serve = [sys.executable, "-m", "local_provider", "--role", "all", "--bind", host,
                 "--gateway-port", str(gport),
                 "--provider-port", str(ep.provider_port), "--metrics-port", str(ep.metrics_port),
                 "--state-dir", str(state_dir),
                 "--auth-password-file", str(password_file(state_dir))]
        # restarted when it dies, its listeners kept meanwhile (local_provider/supervisor.py)
        cmd = [sys.executable, "-m", "local_provider.supervisor",
               *(f"--listen={name}={host}:{port}" for name, port in
                 (("gateway", gport), ("provider", ep.provider_port),
                  ("metrics", ep.metrics_port))), "--", *serve]
        env = {**os.environ, "QUART_KEYS_METRICS_PORT": str(ep.keys_metrics_port)}
        svc = services.start(state_dir, "gateway", cmd, ep.gateway, env=env)
        if not services.wait_http(f"{ep.gateway}/healthz", 60, lambda: services.pid_alive(svc.pid)):
            services.stop(state_dir, svc)
            raise DeployError(f"the local gateway did not start on {ep.gateway}; see {svc.log}")
        say(f"started the local gateway on {ep.gateway} (provider :{ep.provider_port}, "
            f"metrics {ep.metrics}/metrics, keys_manager {ep.keys_metrics}/metrics), "
            f"log {svc.log}")
    if ep.prometheus and not services.answers(f"{ep.prometheus}/-/ready"):
        port = urlparse(ep.prometheus).port or 9090
        metrics_target = urlparse(ep.metrics).netloc
        prometheus.start(state_dir, port, {"openfaas-gateway": [metrics_target],
                                           "keys-manager": [urlparse(ep.keys_metrics).netloc]},
                         scrape_interval_s=1.0)
        say(f"started Prometheus on {ep.prometheus} scraping {metrics_target}")


def check_local(stack: Stack) -> None:
    """Refuse before deploying anything that could not start here."""
    for fn in stack.functions.values():
        handler = stack.root / fn.handler
        if not (handler / "handler.py").is_file():
            raise DeployError(f"{fn.name}: handler folder {handler} has no handler.py")
        if not (stack.root / "template" / fn.lang / "index.py").is_file():
            raise DeployError(f"{fn.name}: template/{fn.lang}/index.py not found beside "
                              f"{stack.path.name} (faas-cli template store pull?)")
        model_dir = fn.environment.get("QUART_MODEL_DIR")
        if model_dir and not has_manifest(stack.root / model_dir):
            model = fn.environment.get("QUART_MODEL", "MODEL")
            stages = fn.environment.get("QUART_STAGES", "N")
            raise DeployError(f"{fn.name}: QUART_MODEL_DIR={model_dir} holds no partition; run "
                              f"`quart-faas partition --model {model} "
                              f"--stages {stages} --out {model_dir}`")


def deploy(stack: Stack, gateway: str, auth: tuple[str, str], local: bool = True,
           only: list[str] | None = None, session: requests.Session | None = None,
           labels: Mapping[str, str] | None = None) -> list[str]:
    """PUT each function, POST it on 404 (faas-cli deploy); returns the names deployed.
    ``labels`` override the stack's on every function, as ``faas-cli deploy --label`` does
    (and, like it, past the stack's Community Edition checks: a benchmark's own cap)."""
    s = session or requests.Session()
    names = only or list(stack.functions)
    unknown = [n for n in names if n not in stack.functions]
    if unknown:
        raise DeployError(f"unknown function(s) {unknown}; the stack has {list(stack.functions)}")
    for name in names:
        body = stack.functions[name].deployment(stack.root if local else None)
        body["labels"].update(labels or {})
        r = s.put(f"{gateway}/system/functions", json=body, auth=auth, timeout=30)
        if r.status_code == 404:
            r = s.post(f"{gateway}/system/functions", json=body, auth=auth, timeout=30)
        if r.status_code == 401:
            raise DeployError(f"{gateway} refused the credentials (401): faas-cli login first")
        if r.status_code >= 300:
            raise DeployError(f"deploying {name} failed: {r.status_code} {r.text.strip()[:300]}")
    return names


def wait_available(gateway: str, auth: tuple[str, str], wanted: dict[str, int],
                   timeout_s: float = 300) -> None:
    """Poll /system/function/{name} until each function has its wanted available replicas."""
    deadline = time.monotonic() + timeout_s
    pending = dict(wanted)
    while pending:
        for name, want in list(pending.items()):
            r = requests.get(f"{gateway}/system/function/{name}", auth=auth, timeout=5)
            if r.ok and r.json().get("availableReplicas", 0) >= want:
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise DeployError(f"not ready after {timeout_s:.0f}s: {sorted(pending)} "
                              "(see the replica logs under .quart/logs)")
        if pending:
            time.sleep(0.2)


def up(stack_file: str, gateway: str | None, state_dir: Path, prometheus_url: str | None,
       say: Callable[[str], None] = print, timeout_s: float = 300,
       provider_port: int | None = None, metrics_port: int | None = None,
       keys_metrics_port: int | None = None, pipeline: str | None = None,
       labels: Mapping[str, str] | None = None) -> tuple[Stack, Endpoints]:
    gw = (gateway or os.environ.get("OPENFAAS_URL") or "").rstrip("/")
    env = dict(os.environ)
    if gw:
        env.setdefault("OPENFAAS_URL", gw)
    try:
        probe = load_stack(stack_file, env)
    except StackError as e:
        raise DeployError(str(e)) from e
    gw = gw or probe.gateway.rstrip("/")
    env.setdefault("QUART_GATEWAY_URL", gw)  # replicas call the next stage through this gateway
    stack = select_pipeline(load_stack(stack_file, env), pipeline)
    check_local(stack)
    # The images, as `quart-faas build` records them: a later `faas-cli deploy` of the
    # same stack resolves to the same folders (and keeps the running replicas).
    images.record(state_dir, build_entries(stack, list(stack.functions.values())))
    ep = endpoints(gw, provider_port, metrics_port,
                   prometheus_url if prometheus_url is not None else "http://127.0.0.1:9090",
                   keys_metrics_port)
    start_local(state_dir, ep, say)
    auth = (USER, password_file(state_dir).read_text().strip())
    names = deploy(stack, ep.gateway, auth, labels=labels)
    say(f"deployed {len(names)} function(s); waiting for replicas")
    wait_available(ep.gateway, auth, {n: min_replicas(stack.functions[n]) for n in names},
                   timeout_s)
    for n in names:
        say(f"  {n:<24} {ep.gateway}/function/{n}")
    say(f"login: cat {password_file(state_dir)} | faas-cli login --username {USER} "
        f"--password-stdin -g {ep.gateway}")
    return stack, ep


def down(state_dir: Path, say: Callable[[str], None] = print) -> int:
    """Stop what `up` started: the plugin first (it acts), Prometheus (it scrapes), the
    gateway, Redis last (the plugin writes its state there until it stops); then what a
    crashed run left (keys_manager, zygotes, replicas, /dev/shm: local_provider/cleanup.py)."""
    svcs = services.recorded(state_dir)
    rank = {"plugin": 0, "prometheus": 1, "redis": 3}
    order = sorted(svcs, key=lambda s: next((v for k, v in rank.items()
                                             if s.name.startswith(k)), 2))
    n = 0
    for svc in order:
        if services.stop(state_dir, svc):
            n += 1
            say(f"stopped {svc.name} (pid {svc.pid})")
    left = cleanup.leftovers(state_dir, say)
    if not svcs and not left:
        say("nothing to stop")
    return n + left
