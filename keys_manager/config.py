"""keys_manager settings: one dataclass, every field from an environment variable.

| variable                  | default                                   | meaning |
|---------------------------|-------------------------------------------|---------|
| QUART_STATE_DIR           | .quart                                    | base of the defaults below |
| QUART_KEYS_SOCKET         | $QUART_STATE_DIR/keys_manager.sock        | the API socket (Unix, mode 0600) |
| QUART_KEYS_DIR            | $QUART_STATE_DIR/keys                     | agent state, zygote sockets and logs; T2 in ``disk/`` |
| QUART_SHM_DIR             | /dev/shm/quart-<uid>-<hash of KEYS_DIR>   | T1 segments (dedicated directory, removed on shutdown) |
| QUART_MEMORY_THRESHOLD    | 0.65                                      | T1 budget: bytes ("512MiB", "2G") or a fraction of node memory (seed 001) |
| QUART_KEYS_METRICS_PORT   | 8083                                      | ``/metrics`` and ``/healthz`` on 127.0.0.1; 0 = any free port |
| QUART_KEYS_BIND           | 127.0.0.1                                 | address of the metrics listener |
| QUART_KEYS_START_TIMEOUT_S| 120                                       | a zygote not answering by then is killed |
| QUART_KEYS_SCRUB_S        | 300                                       | period of the full sha256 scrub of T1; 0 = never |
| QUART_KEYS_REAP_S         | 0.5                                       | period of the check for replicas that died |
| QUART_KEYS_VERIFY         | 1                                         | hash copies already in T1/T2 when first used |
| QUART_KEYS_POOL           | 1                                         | idle workers pre-forked per function (keys_manager/pool.py); the ``pool`` op sets it per function |
| QUART_KEYS_OWNER_PID      | (set by the provider that starts it)      | the provider it lives for (keys_manager/owner.py) |
| QUART_KEYS_ORPHAN_GRACE_S | 30                                        | owner gone and nobody adopted us: stop replicas, zygotes, exit |
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from keys_manager.threshold import node_memory_bytes, parse_threshold

_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class AgentConfig:
    socket: Path
    keys_dir: Path
    shm_dir: Path
    memory_threshold_bytes: int
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 8083
    start_timeout_s: float = 120.0
    scrub_period_s: float = 300.0
    reap_period_s: float = 0.5
    verify: bool = True
    pool_size: int = 1
    python: str = sys.executable

    @property
    def disk_dir(self) -> Path:
        return self.keys_dir / "disk"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AgentConfig:
        e = os.environ if env is None else env
        state = Path(e.get("QUART_STATE_DIR") or ".quart").absolute()
        keys = Path(e.get("QUART_KEYS_DIR") or state / "keys").absolute()
        tag = hashlib.sha256(str(keys).encode()).hexdigest()[:8]
        shm = Path(e.get("QUART_SHM_DIR") or f"/dev/shm/quart-{os.getuid()}-{tag}")

        def num(name: str, default: str, kind: Callable[[str], _N]) -> _N:
            raw = e.get(name) or default
            try:
                v = kind(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None
            if v < 0:
                raise ValueError(f"{name}={raw!r} must be >= 0")
            return v

        return cls(
            socket=Path(e.get("QUART_KEYS_SOCKET") or state / "keys_manager.sock").absolute(),
            keys_dir=keys, shm_dir=shm,
            memory_threshold_bytes=parse_threshold(e.get("QUART_MEMORY_THRESHOLD") or "0.65",
                                                   node_memory_bytes()),
            metrics_bind=e.get("QUART_KEYS_BIND") or "127.0.0.1",
            metrics_port=num("QUART_KEYS_METRICS_PORT", "8083", int),
            start_timeout_s=num("QUART_KEYS_START_TIMEOUT_S", "120", float),
            scrub_period_s=num("QUART_KEYS_SCRUB_S", "300", float),
            reap_period_s=num("QUART_KEYS_REAP_S", "0.5", float) or 0.5,
            verify=(e.get("QUART_KEYS_VERIFY") or "1").lower() not in ("0", "false", "no"),
            pool_size=num("QUART_KEYS_POOL", "1", int),
        )
