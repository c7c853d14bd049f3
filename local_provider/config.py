"""Configuration of the local provider and gateway, parsed once from the environment.

Upstream OpenFaaS names are kept where upstream has the knob (``basic_auth``,
``secret_mount_path``, ``functions_provider_url``); everything else is ours and
prefixed ``QUART_``.

| variable                        | default                  | meaning                                       |
|---------------------------------|--------------------------|-----------------------------------------------|
| QUART_BIND                      | 127.0.0.1                | address every listener binds                  |
| QUART_GATEWAY_PORT              | 8080                     | gateway (``/function/*``, ``/system/*``); 0 = any free port |
| QUART_PROVIDER_PORT             | 8081                     | faas-provider REST API; 0 = any free port     |
| QUART_METRICS_PORT              | 8082                     | gateway ``/metrics``; 0 = any free port       |
| QUART_STATE_DIR                 | .quart                   | logs, ``serve.json``, generated password      |
| functions_provider_url          | http://127.0.0.1:8081/   | provider used by a gateway-only process       |
| basic_auth                      | true                     | protect ``/system/*`` with HTTP basic auth    |
| secret_mount_path               | (unset)                  | folder with ``basic-auth-user``/``basic-auth-password`` |
| QUART_BASIC_AUTH_PASSWORD_FILE  | (unset)                  | file holding the password of user ``admin``   |
| QUART_QUEUE_SIZE                | 256                      | requests waiting per function (-> 429)        |
| QUART_QUEUE_TIMEOUT_S           | 30                       | longest wait for a free replica (-> 504)      |
| QUART_UPSTREAM_TIMEOUT_S        | 60                       | longest replica call (-> 504)                 |
| scale_from_zero                 | true                     | a call to a function at 0 replicas scales it to its minimum (``com.openfaas.scale.min``, at least 1) and waits, within QUART_QUEUE_TIMEOUT_S, as the upstream gateway does |
| QUART_MAX_BODY_BYTES            | 67108864 (64 MiB)        | request body limit (-> 413); a partitioned stage's own limit is lower (contracts/body_limits.py) |
| QUART_BODY_BUDGET_BYTES         | 268435456 (256 MiB)      | request bodies held at once by a gateway or provider (-> 429 with Retry-After; local_provider/body_guard.py) |
| QUART_MAX_REPLICAS              | 32                       | hard cap per function (no CE 5-replica cap)   |
| QUART_START_TIMEOUT_S           | 120                      | a replica not healthy by then is killed       |
| QUART_RECONCILE_PERIOD_S        | 0.25                     | replica reconcile loop period                 |
| QUART_DRAIN_TIMEOUT_S           | 5                        | wait for in-flight calls before stopping a replica |
| QUART_STOP_GRACE_S              | 5                        | SIGTERM -> SIGKILL grace of a replica          |
| QUART_EJECT                     | true                     | eject hung replicas (below); ``false``: never  |
| QUART_EJECT_MIN_S               | 2                        | a replica with calls in flight and none finished for max(this, QUART_EJECT_FACTOR x p99 of the function's recent gaps between a busy replica's finished calls) is probed, and ejected when ``/_/health`` does not answer (local_provider/outliers.py) |
| QUART_EJECT_FACTOR              | 5                        | see QUART_EJECT_MIN_S                          |
| QUART_EJECT_COLD_S              | 30                       | the stall limit before 20 gaps of the function were seen |
| QUART_EJECT_PROBE_TIMEOUT_S     | 1                        | a health probe slower than this fails          |
| QUART_EJECT_MAX_PERCENT         | 50                       | at most this share of a function's replicas (at least one) ejected per 30 s (Envoy's max_ejection_percent) |
| QUART_EJECT_GRACE_S             | 0.5                      | SIGTERM -> SIGKILL grace of an ejected replica |
| QUART_SERVER_THREADS            | QUART_QUEUE_SIZE + 128   | waitress threads of gateway and provider      |
| QUART_TEMPLATE_DIR              | <repo>/template/quart-python | template used with the handler annotation alone |
| QUART_BUILD_DIR                 | build                    | where ``faas-cli build --shrinkwrap`` writes ``<function>/``; an image not in ``<state>/images.json`` runs from there (local_provider/images.py) |
| QUART_LOG_LINES                 | 2000                     | replica log lines kept in memory per function for ``/system/logs`` (files keep all) |
| QUART_LOG_FOLLOW_S              | 60                       | longest ``/system/logs?follow=true`` stream |
| QUART_CPU_LIMITS                | auto                     | ``auto``: limits.cpu of a function becomes a CFS quota per replica (cgroup v2 or v1, when writable; see ``GET /system/quart/capabilities``); ``off``: metadata only |
| QUART_NODES                     | (unset: one node)        | simulated nodes, each its own keys_manager: ``3`` or ``a:1GiB,b:2GiB:2`` (name:memory[:capacity]); replicas placed cache-aware (local_provider/nodes.py) |
| QUART_NODE_MEMORY               | 0.2                      | memory_threshold of each node given by count |
| QUART_LAUNCHER                  | fork                     | ``fork``: replicas from keys_manager's warm zygotes (its settings: keys_manager/config.py); ``process``: a fresh process each; ``pod``: each a pod, the real fwatchdog + index.py in its own netns and cgroup (local_provider/pod_launcher.py; root, ``QUART_OPENFAAS_BIN``) |

A queued request holds a server thread while it waits, so the thread count
defaults above the queue size: otherwise waitress would queue requests where
nobody can count or bound them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

NAMESPACE = "openfaas-fn"
DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "template" / "quart-python"


class ConfigError(ValueError):
    """A variable that cannot be parsed; the message names it."""


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "")
    return raw.strip() if raw.strip() else default


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be > 0")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class ProviderConfig:
    """Knobs of the replica manager and the per-function router."""

    state_dir: Path = Path(".quart")
    namespace: str = NAMESPACE
    queue_size: int = 256
    queue_timeout_s: float = 30.0
    upstream_timeout_s: float = 60.0
    scale_from_zero: bool = True
    max_body_bytes: int = 64 << 20
    body_budget_bytes: int = 256 << 20
    max_replicas: int = 32
    start_timeout_s: float = 120.0
    reconcile_period_s: float = 0.25
    drain_timeout_s: float = 5.0
    stop_grace_s: float = 5.0
    eject: bool = True
    eject_min_s: float = 2.0
    eject_factor: float = 5.0
    eject_cold_s: float = 30.0
    eject_probe_timeout_s: float = 1.0
    eject_max_percent: float = 50.0
    eject_grace_s: float = 0.5
    template_dir: Path = DEFAULT_TEMPLATE_DIR
    build_dir: Path = Path("build")
    log_lines: int = 2000
    log_follow_s: float = 60.0

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProviderConfig:
        e = os.environ if env is None else env
        return cls(
            state_dir=Path(_get(e, "QUART_STATE_DIR", ".quart")),
            queue_size=_int(e, "QUART_QUEUE_SIZE", 256),
            queue_timeout_s=_float(e, "QUART_QUEUE_TIMEOUT_S", 30.0),
            upstream_timeout_s=_float(e, "QUART_UPSTREAM_TIMEOUT_S", 60.0),
            scale_from_zero=_bool(e, "scale_from_zero", True),
            max_body_bytes=_int(e, "QUART_MAX_BODY_BYTES", 64 << 20, minimum=1),
            body_budget_bytes=_int(e, "QUART_BODY_BUDGET_BYTES", 256 << 20, minimum=1),
            max_replicas=_int(e, "QUART_MAX_REPLICAS", 32, minimum=1),
            start_timeout_s=_float(e, "QUART_START_TIMEOUT_S", 120.0),
            reconcile_period_s=_float(e, "QUART_RECONCILE_PERIOD_S", 0.25),
            drain_timeout_s=_float(e, "QUART_DRAIN_TIMEOUT_S", 5.0),
            stop_grace_s=_float(e, "QUART_STOP_GRACE_S", 5.0),
            eject=_bool(e, "QUART_EJECT", True),
            eject_min_s=_float(e, "QUART_EJECT_MIN_S", 2.0),
            eject_factor=_float(e, "QUART_EJECT_FACTOR", 5.0),
            eject_cold_s=_float(e, "QUART_EJECT_COLD_S", 30.0),
            eject_probe_timeout_s=_float(e, "QUART_EJECT_PROBE_TIMEOUT_S", 1.0),
            eject_max_percent=_float(e, "QUART_EJECT_MAX_PERCENT", 50.0),
            eject_grace_s=_float(e, "QUART_EJECT_GRACE_S", 0.5),
            template_dir=Path(_get(e, "QUART_TEMPLATE_DIR", str(DEFAULT_TEMPLATE_DIR))),
            build_dir=Path(_get(e, "QUART_BUILD_DIR", "build")),
            log_lines=_int(e, "QUART_LOG_LINES", 2000, minimum=1),
            log_follow_s=_float(e, "QUART_LOG_FOLLOW_S", 60.0),
        )


@dataclass(frozen=True)
class AuthConfig:
    """Basic auth of ``/system/*`` (upstream: user ``admin``, password from a secret)."""

    enabled: bool = True
    user: str = "admin"
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    secret_mount_path: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthConfig:
        e = os.environ if env is None else env
        pw_file = _get(e, "QUART_BASIC_AUTH_PASSWORD_FILE", "")
        mount = _get(e, "secret_mount_path", "")
        return cls(
            enabled=_bool(e, "basic_auth", True),
            password_file=Path(pw_file) if pw_file else None,
            secret_mount_path=Path(mount) if mount else None,
        )


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``serve()`` needs: listeners, the provider URL and both components."""

    bind: str = "127.0.0.1"
    gateway_port: int = 8080
    provider_port: int = 8081
    metrics_port: int = 8082
    provider_url: str = "http://127.0.0.1:8081/"
    state_dir: Path = Path(".quart")
    server_threads: int = 384
    auth: AuthConfig = AuthConfig()
    provider: ProviderConfig = ProviderConfig()

    def __post_init__(self) -> None:
        # One state dir: ``replace(cfg, state_dir=...)`` must move the replica logs too.
        if self.provider.state_dir != self.state_dir:
            object.__setattr__(self, "provider", replace(self.provider, state_dir=self.state_dir))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServeConfig:
        """Read the environment, then apply keyword overrides (command-line flags).

        Overrides whose value is None are ignored, so argparse results can be
        passed through as they are.  Accepted keys: every field of this class
        plus ``auth_password_file``.
        """
        e = os.environ if env is None else env
        provider = ProviderConfig.from_env(e)
        auth = AuthConfig.from_env(e)
        cfg = cls(
            bind=_get(e, "QUART_BIND", "127.0.0.1"),
            gateway_port=_int(e, "QUART_GATEWAY_PORT", 8080),
            provider_port=_int(e, "QUART_PROVIDER_PORT", 8081),
            metrics_port=_int(e, "QUART_METRICS_PORT", 8082),
            provider_url=_get(e, "functions_provider_url", "http://127.0.0.1:8081/"),
            state_dir=provider.state_dir,
            server_threads=_int(e, "QUART_SERVER_THREADS", provider.queue_size + 128, minimum=8),
            auth=auth,
            provider=provider,
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        pw_file = given.pop("auth_password_file", None)
        if pw_file is not None:
            auth = replace(auth, password_file=Path(pw_file))
            given["auth"] = auth
        if "state_dir" in given:
            given["state_dir"] = Path(given["state_dir"])
        return replace(cfg, **given)
