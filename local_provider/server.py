"""Run the provider and/or the gateway with waitress, until SIGTERM/SIGINT.

``serve()`` is the one entry point (``python -m local_provider`` and
``quart-faas serve`` call it).  Listeners are bound before anything is
announced, so ports given as 0 are known and written to
``<state_dir>/serve.json`` for whoever started us.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flask import Flask
from waitress import create_server

from local_provider import auth as auth_mod
from local_provider import memory
from local_provider.adopt import PersistentRegistry
from local_provider.body_guard import BodyBudget, BodyGuard, guarded_channel
from local_provider.config import ServeConfig
from local_provider.cpulimit import CpuLimiter
from local_provider.function_limits import FunctionLimits, path_limits
from local_provider.gateway_app import (
    LocalDirectory,
    RemoteDirectory,
    create_gateway_app,
    create_metrics_app,
)
from local_provider.metrics import GatewayMetrics
from local_provider.outliers import OutlierWatch
from local_provider.provider_app import create_provider_app
from local_provider.proxy import HttpInvoker, ReplicaProxy
from local_provider.registry import Registry
from local_provider.replicas import ProcessLauncher, ReplicaLauncher
from local_provider.supervisor import inherited

log = logging.getLogger("local_provider.server")

ROLES = ("all", "gateway", "provider")
BUFFER_BYTES = 64 << 20


def _server(app: Flask, host: str, port: int, threads: int,
            guard: BodyGuard | None = None) -> Any:
    # Bound here, then handed over: waitress' create_server starts its request threads
    # before it binds, so a port in use would leave them behind, out of anyone's reach.
    # connection_limit above the thread count: queued calls hold connections too.
    # Buffers: waitress spills bodies over 512 KiB (in) / 1 MiB (out) to temp files;
    # activations of a 32-sentence batch are ~1.2 MB per hop, so keep them in memory; what
    # bodies hold at once is bounded by the guard's budget (QUART_BODY_BUDGET_BYTES).
    # Under local_provider/supervisor.py the listener is the supervisor's, kept across restarts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = inherited(port) or socket.create_server((host, port), family=family, backlog=2048)
    try:
        srv = create_server(app, sockets=[sock], threads=threads,
                            connection_limit=threads * 2 + 64, backlog=2048,
                            channel_timeout=300, ident="quart-faas",
                            clear_untrusted_proxy_headers=True,
                            inbuf_overflow=BUFFER_BYTES, outbuf_overflow=BUFFER_BYTES)
        if guard is not None:  # bodies refused or shed while they arrive (body_guard.py)
            srv.channel_class = guarded_channel(guard)
        memory.hot_threads_first(srv.task_dispatcher)  # only the threads in use get warm
        return srv
    except BaseException:
        sock.close()
        raise


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@dataclass
class _Parts:
    """What ``_build`` made so far: all of it is undone, even when building failed midway."""

    servers: list[tuple[str, Any]] = field(default_factory=list)
    registry: Registry | None = None
    limiter: CpuLimiter | None = None
    outliers: OutlierWatch | None = None


def _build(cfg: ServeConfig, role: str, basic: Any, launcher: ReplicaLauncher,
           parts: _Parts) -> dict[str, str]:
    """Create the apps and bind their listeners (kept in ``parts`` as they are made)."""
    urls: dict[str, str] = {}
    registry: Registry | None = None
    servers = parts.servers
    budget = BodyBudget(cfg.provider.body_budget_bytes)  # one per process: one memory
    memory.configure()

    if role in ("all", "provider"):
        parts.limiter = _limiter(cfg, launcher)
        registry = parts.registry = PersistentRegistry(cfg.provider, launcher,
                                                       limiter=parts.limiter)
        proxy = ReplicaProxy(registry, cfg.provider, pool_maxsize=64)
        limits = FunctionLimits(registry)
        papp = create_provider_app(registry, proxy, cfg.provider, basic, limits=limits)
        psrv = _server(papp, cfg.bind, cfg.provider_port, cfg.server_threads,
                       _guard(cfg, budget, limits.get))
        servers.append(("provider", psrv))
        urls["provider_url"] = _url(cfg.bind, psrv.effective_port)

    if role in ("all", "gateway"):
        if registry is not None:
            invoker: Any = proxy
            directory: Any = LocalDirectory(registry)
            provider_url = urls["provider_url"]
        else:
            provider_url = cfg.provider_url
            invoker = HttpInvoker(provider_url, cfg.provider.queue_timeout_s
                                  + cfg.provider.upstream_timeout_s + 10,
                                  pool_maxsize=cfg.server_threads)
            directory = RemoteDirectory(provider_url, basic)
        metrics = GatewayMetrics(directory.gauges)
        gapp = create_gateway_app(invoker, directory, metrics, provider_url, basic,
                                  cfg.provider.max_body_bytes,
                                  log_follow_s=cfg.provider.log_follow_s)
        gsrv = _server(gapp, cfg.bind, cfg.gateway_port, cfg.server_threads,
                       _guard(cfg, budget, directory.body_limit))
        servers.append(("gateway", gsrv))
        msrv = _server(create_metrics_app(metrics), cfg.bind, cfg.metrics_port, 8)
        servers.append(("metrics", msrv))
        urls["gateway_url"] = _url(cfg.bind, gsrv.effective_port)
        urls["metrics_url"] = _url(cfg.bind, msrv.effective_port)
        if registry is not None:
            # Pipeline stages call the next stage through this gateway (envVars win).
            registry.replica_env.setdefault("QUART_GATEWAY_URL", urls["gateway_url"])

    return urls


def _guard(cfg: ServeConfig, budget: BodyBudget,
           lookup: Callable[[str], int | None]) -> BodyGuard:
    limit = cfg.provider.max_body_bytes
    return BodyGuard(path_limits(lookup, limit), limit, budget)


def _limiter(cfg: ServeConfig, launcher: ReplicaLauncher) -> Any:
    """``QUART_CPU_LIMITS=auto`` (default): enforce limits.cpu with cgroups when writable
    (a pod launcher's own: each pod's cgroup); ``off``: keep them as metadata.  One cgroup
    tree per state dir."""
    mode = (os.environ.get("QUART_CPU_LIMITS") or "auto").strip().lower()
    if mode == "off":
        return None
    if mode != "auto":
        raise ValueError(f"QUART_CPU_LIMITS={mode!r}: use 'auto' or 'off'")
    if getattr(launcher, "limiter", None) is not None:
        return launcher.limiter  # type: ignore[attr-defined]
    tag = hashlib.sha256(str(cfg.state_dir.absolute()).encode()).hexdigest()[:8]
    lim = CpuLimiter(f"quart-{tag}")
    if not lim.available:
        log.warning("%s", lim.reason)
    return lim


def default_launcher(cfg: ServeConfig) -> ReplicaLauncher:
    """``QUART_LAUNCHER=fork`` (the default): every replica is spawned by the node's
    keys_manager, forked from a warm zygote (started on demand); ``process``: one fresh
    ``python index.py`` per replica, for a node without keys_manager; ``pod``: each replica
    a pod as faas-netes runs it (local_provider/pod_launcher.py)."""
    kind = (os.environ.get("QUART_LAUNCHER") or "fork").strip().lower()
    nodes = (os.environ.get("QUART_NODES") or "").strip()
    if kind == "fork" and nodes:
        from local_provider.nodes import MultiNodeLauncher

        return MultiNodeLauncher(cfg.state_dir, nodes, os.environ.get("QUART_NODE_MEMORY") or "0.2")
    if kind == "fork":
        from keys_manager.client import AgentLauncher

        return AgentLauncher(cfg.state_dir)
    if kind == "pod":  # each replica a pod: fwatchdog + index.py, own netns and cgroup
        from local_provider.pod_launcher import PodLauncher

        return PodLauncher(cfg.state_dir)
    if kind != "process":
        raise ValueError(f"QUART_LAUNCHER={kind!r}: use 'process', 'fork' or 'pod'")
    return ProcessLauncher()


# size: start, serve, then the shutdown in its one safe order, read top to bottom in one place
def serve(config: ServeConfig | None = None, role: str = "all", *,
          stop: threading.Event | None = None,
          launcher: ReplicaLauncher | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set); stop every replica; return 0.

    config:   ``ServeConfig.from_env()`` when None (env vars documented in config.py).
    role:     "all" (gateway + provider in one process, in-process invocation),
              "gateway" (proxies to ``config.provider_url``) or "provider".
    stop:     set it to shut down from another thread (embedding, tests); signal
              handlers are installed only when called from the main thread.
    launcher: how replicas become processes (default: one ``python index.py`` each).

    Whatever stops it, a failure to start included (a port in use, a bad setting), it
    leaves nothing behind: no listener, no waitress thread, no replica, no keys_manager.
    An embedder whose call raised cannot stop what it never got a handle on.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    cfg = config or ServeConfig.from_env()
    stop = stop or threading.Event()
    cfg = replace(cfg, auth=auth_mod.resolve(cfg.auth, cfg.state_dir))
    basic = auth_mod.from_config(cfg.auth)
    launcher = launcher or default_launcher(cfg)
    parts = _Parts()
    state_file = cfg.state_dir / "serve.json"
    restore = None
    try:
        urls = _build(cfg, role, basic, launcher, parts)
        if parts.registry is not None:
            parts.registry.start()
            parts.outliers = OutlierWatch(parts.registry, cfg.provider)
            parts.outliers.start()
        for name, srv in parts.servers:
            threading.Thread(target=srv.run, name=f"waitress-{name}", daemon=True).start()
        _write_json(state_file, {**urls, "role": role, "pid": os.getpid(),
                                 "auth_password_file": str(cfg.auth.password_file or "")})
        log.info("serving role=%s %s (state %s)", role,
                 " ".join(f"{k.removesuffix('_url')}={v}" for k, v in urls.items()), state_file)
        restore = _install_signals(stop)
        while not stop.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        _shut_down(parts, launcher)
        _remove_if_ours(state_file)
        if restore is not None:
            restore()
    return 0


def _shut_down(parts: _Parts, launcher: ReplicaLauncher) -> None:
    """Listeners first (no new calls), then replicas, cgroups, the launcher (e.g. the fork
    launcher's keys_manager), last the request threads.  Each step runs even if one fails."""
    steps: list[Any] = [srv.close for _, srv in parts.servers]
    if parts.outliers is not None:
        steps.append(parts.outliers.stop)
    if parts.registry is not None:
        steps.append(parts.registry.stop_all)
    if parts.limiter is not None:
        steps.append(parts.limiter.close)
    steps.append(getattr(launcher, "close", lambda: None))
    steps += [lambda s=srv: s.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
              for _, srv in parts.servers]
    for step in steps:
        try:
            step()
        except Exception:  # one failing step must not keep replicas or threads alive
            log.exception("shutdown step %s failed", getattr(step, "__qualname__", step))


def _install_signals(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    for s in previous:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


def _remove_if_ours(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
