"""The scorer's settings: one frozen dataclass, parsed once from the environment.

The first five variables are the seed's (names and defaults unchanged); the
rest are ours and say what the seed left implicit (the prior, the EMA
weight, the exploration window, where state lives, where to listen).

| variable                       | default                  | meaning |
|--------------------------------|--------------------------|---------|
| SCHEDULER_LAMBDA_UNCERTAINTY   | 0.3                      | lambda: weight of sqrt(sigma^2), the uncertainty penalty |
| SCHEDULER_BETA_EXPLORATION     | 0.7                      | beta: weight of the information gain (seconds per nat) |
| SCHEDULER_GAMMA_INTERFERENCE   | 0.0                      | gamma: weight of the learned co-location slowdown |
| SCHEDULER_EXPLORATION_CAP      | 0.25                     | most exploratory decisions allowed per decision in the window |
| SCHEDULER_ENABLE_INTERFERENCE  | false                    | learn slowdowns between co-located job types |
| SCHEDULER_EXPLORATION_WINDOW   | 100                      | decisions the cap is measured over (0: all since the first start) |
| SCHEDULER_EMA_ALPHA            | 0.1                      | EMA weight of one observation (noise variance, slowdowns, floor of sigma^2) |
| SCHEDULER_PRIOR_MEAN_S         | 1.0                      | prior runtime of a job type never observed on any GPU type |
| SCHEDULER_PRIOR_CV             | 1.0                      | prior sigma relative to the prior mean |
| SCHEDULER_NOISE_CV             | 0.1                      | tau (runtime noise) relative to the mean until it is learned |
| SCHEDULER_DB                   | redis                    | where state lives: ``redis``, ``sqlite`` or ``memory`` |
| REDIS_URL                      | redis://127.0.0.1:6379/0 | the Redis server (SCHEDULER_DB=redis) |
| SCHEDULER_REDIS_PREFIX         | quart:scorer:            | key prefix (several scorers per Redis) |
| SCHEDULER_DB_PATH              | .quart/scorer.sqlite3    | the SQLite file (SCHEDULER_DB=sqlite) |
| SCHEDULER_BIND / SCHEDULER_PORT| 127.0.0.1 / 8085         | where the HTTP service listens |
| basic_auth                     | true                     | ``/v1/*`` and ``GET /`` take the OpenFaaS gateway's basic-auth credentials; without a password the scorer refuses to start unless this is ``false`` |
| QUART_BASIC_AUTH_USER / basic_auth_user | admin           | the user; else ``$secret_mount_path/basic-auth-user`` |
| QUART_BASIC_AUTH_PASSWORD_FILE | (unset)                  | the password file; else ``$secret_mount_path/basic-auth-password``, else ``$QUART_STATE_DIR/basic-auth-password`` (gateway_plugin/webguard.py) |
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from webguard import auth_enabled, credentials

BACKENDS = ("redis", "sqlite", "memory")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ScorerConfig:
    lambda_uncertainty: float = 0.3
    beta_exploration: float = 0.7
    gamma_interference: float = 0.0
    exploration_cap: float = 0.25
    enable_interference: bool = False
    exploration_window: int = 100
    ema_alpha: float = 0.1
    prior_mean_s: float = 1.0
    prior_cv: float = 1.0
    noise_cv: float = 0.1
    db: str = "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "quart:scorer:"
    db_path: str = ".quart/scorer.sqlite3"
    bind: str = "127.0.0.1"
    port: int = 8085
    basic_auth: bool = True
    user: str = "admin"
    password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ScorerConfig:
        e = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return (e.get(name) or default).strip()

        def num(name: str, default: str, kind: Callable[[str], Any] = float,
                lo: float = 0.0, hi: float = float("inf")) -> Any:
            raw = get(name, default)
            try:
                v = kind(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a valid "
                                  f"{getattr(kind, '__name__', 'number')}") from None
            if not lo <= v <= hi:  # also rejects nan
                raise ConfigError(f"{name}={raw!r} must be in [{lo:g}, {hi:g}]")
            return v

        def flag(name: str, default: str) -> bool:
            raw = get(name, default).lower()
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}={raw!r}: use true or false")

        user, password = credentials(e) or ("admin", "")
        db = get("SCHEDULER_DB", "redis").lower()
        if db not in BACKENDS:
            raise ConfigError(f"SCHEDULER_DB={db!r}: use one of {', '.join(BACKENDS)}")
        return cls(
            lambda_uncertainty=num("SCHEDULER_LAMBDA_UNCERTAINTY", "0.3", hi=1e6),
            beta_exploration=num("SCHEDULER_BETA_EXPLORATION", "0.7", hi=1e6),
            gamma_interference=num("SCHEDULER_GAMMA_INTERFERENCE", "0.0", hi=1e6),
            exploration_cap=num("SCHEDULER_EXPLORATION_CAP", "0.25", hi=1.0),
            enable_interference=flag("SCHEDULER_ENABLE_INTERFERENCE", "false"),
            exploration_window=num("SCHEDULER_EXPLORATION_WINDOW", "100", int, 0, 10**6),
            ema_alpha=num("SCHEDULER_EMA_ALPHA", "0.1", lo=1e-6, hi=1.0),
            prior_mean_s=num("SCHEDULER_PRIOR_MEAN_S", "1.0", lo=1e-9, hi=1e9),
            prior_cv=num("SCHEDULER_PRIOR_CV", "1.0", lo=1e-6, hi=1e3),
            noise_cv=num("SCHEDULER_NOISE_CV", "0.1", lo=1e-6, hi=1e3),
            db=db,
            redis_url=get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix=get("SCHEDULER_REDIS_PREFIX", "quart:scorer:"),
            db_path=get("SCHEDULER_DB_PATH", ".quart/scorer.sqlite3"),
            bind=get("SCHEDULER_BIND", "127.0.0.1"),
            port=num("SCHEDULER_PORT", "8085", int, 0, 65535),
            basic_auth=auth_enabled(e), user=user, password=password,
        )

    def public(self) -> dict[str, Any]:
        """What ``GET /`` shows: every setting under its environment variable name."""
        d = asdict(self)
        for secret in ("user", "password"):  # who may come in is not shown to whoever did
            d.pop(secret)
        names = {
            "lambda_uncertainty": "SCHEDULER_LAMBDA_UNCERTAINTY",
            "beta_exploration": "SCHEDULER_BETA_EXPLORATION",
            "gamma_interference": "SCHEDULER_GAMMA_INTERFERENCE",
            "exploration_cap": "SCHEDULER_EXPLORATION_CAP",
            "enable_interference": "SCHEDULER_ENABLE_INTERFERENCE",
            "exploration_window": "SCHEDULER_EXPLORATION_WINDOW",
            "ema_alpha": "SCHEDULER_EMA_ALPHA",
            "prior_mean_s": "SCHEDULER_PRIOR_MEAN_S",
            "prior_cv": "SCHEDULER_PRIOR_CV",
            "noise_cv": "SCHEDULER_NOISE_CV",
            "db": "SCHEDULER_DB",
            "redis_url": "REDIS_URL",
            "redis_prefix": "SCHEDULER_REDIS_PREFIX",
            "db_path": "SCHEDULER_DB_PATH",
            "bind": "SCHEDULER_BIND",
            "port": "SCHEDULER_PORT",
            "basic_auth": "basic_auth",
        }
        out = {names[k]: v for k, v in d.items()}
        out["REDIS_URL"] = _redact(out["REDIS_URL"])
        return out


def _redact(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host``: GET / is not for passwords."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
