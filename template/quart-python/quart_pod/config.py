"""Pod mode's settings, parsed once from the environment (the OpenFaaS way).

| variable                   | default                         | meaning                                  |
|----------------------------|---------------------------------|------------------------------------------|
| QUART_POD_WORKERS          | (unset: pod mode off)           | workers forked at start                  |
| QUART_POD_MAX_WORKERS      | max(QUART_POD_WORKERS, 2 x CPUs) | bound of ``PUT /_/quart/workers``        |
| QUART_POD_WORKER_INFLIGHT  | 1                               | connections one worker takes at a time   |
| QUART_POD_SPAWN_TIMEOUT_S  | 60                              | a PUT not applied by then answers 503    |
| QUART_POD_DRAIN_S          | 30                              | a retired worker's wait for its calls    |
| QUART_SECRETS_DIR          | /var/openfaas/secrets           | where OpenFaaS mounts the function's secrets |
| QUART_CONTROL_TOKEN_FILE   | $QUART_SECRETS_DIR/quart-control-token | bearer token of the control endpoint |
| QUART_CONTROL_PORT         | 8082                            | the zygote's own port for ``/_/quart/*`` (0: none) |
| QUART_CONTROL_HOST         | 0.0.0.0                         | the address it listens on                |

Why 8082: in a pod, of-watchdog holds 8080 (the function) and 8081 (its metrics).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SECRETS_DIR = "/var/openfaas/secrets"
TOKEN_NAME = "quart-control-token"
CONTROL_PORT = 8082


class PodConfigError(ValueError):
    """A variable that cannot be parsed; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = (env.get(name) or "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise PodConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise PodConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip() or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise PodConfigError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise PodConfigError(f"{name}={raw!r} must be > 0")
    return value


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Pod mode is on when QUART_POD_WORKERS is set (to anything but blank)."""
    return bool(((os.environ if env is None else env).get("QUART_POD_WORKERS") or "").strip())


def secrets_dir(env: Mapping[str, str] | None = None) -> Path:
    """The function's secrets: QUART_SECRETS_DIR, else where OpenFaaS mounts them."""
    e = os.environ if env is None else env
    return Path((e.get("QUART_SECRETS_DIR") or "").strip() or SECRETS_DIR)


@dataclass(frozen=True)
class PodConfig:
    workers: int
    max_workers: int
    worker_inflight: int = 1
    spawn_timeout_s: float = 60.0
    drain_s: float = 30.0
    threads: int = 1
    token_file: Path = Path(SECRETS_DIR) / TOKEN_NAME
    control_port: int = CONTROL_PORT  # 0: control only through the watchdog
    control_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodConfig:
        e = os.environ if env is None else env
        workers = _int(e, "QUART_POD_WORKERS", 1, 1)
        max_workers = _int(e, "QUART_POD_MAX_WORKERS", max(workers, 2 * (os.cpu_count() or 1)), 1)
        if workers > max_workers:
            raise PodConfigError(f"QUART_POD_WORKERS={workers} exceeds "
                                 f"QUART_POD_MAX_WORKERS={max_workers}")
        token = (e.get("QUART_CONTROL_TOKEN_FILE") or "").strip()
        inflight = _int(e, "QUART_POD_WORKER_INFLIGHT", 1, 1)
        return cls(
            workers=workers, max_workers=max_workers, worker_inflight=inflight,
            spawn_timeout_s=_float(e, "QUART_POD_SPAWN_TIMEOUT_S", 60.0),
            drain_s=_float(e, "QUART_POD_DRAIN_S", 30.0),
            threads=inflight,  # a worker holds no more connections than that
            token_file=Path(token) if token else secrets_dir(e) / TOKEN_NAME,
            control_port=control_port(e),
            control_host=(e.get("QUART_CONTROL_HOST") or "").strip() or "0.0.0.0",
        )


def control_port(env: Mapping[str, str] | None = None) -> int:
    """QUART_CONTROL_PORT (0: no control port); the local pod runner reads it too."""
    port = _int(os.environ if env is None else env, "QUART_CONTROL_PORT", CONTROL_PORT, 0)
    if port > 65535:
        raise PodConfigError(f"QUART_CONTROL_PORT={port} is not a port")
    return port
