"""`quart-faas up --with-plugin`: a Redis server and the autoscaling plugin beside the
gateway, as background services recorded like the gateway (``quart-faas down`` stops them).

Redis is started from the Debian ``redis-server`` binary only when nothing answers at
the URL, without persistence (the plugin writes its state back after a Redis restart);
an existing Redis is used as it is.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import redis

from local_provider import services


class ServiceError(RuntimeError):
    pass


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def ensure_redis(state_dir: Path, url: str, say: Callable[[str], None]) -> None:
    if redis_answers(url):
        return
    u = urlparse(url)
    if u.hostname not in ("127.0.0.1", "localhost"):
        raise ServiceError(f"Redis at {url} does not answer (and is not ours to start)")
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise ServiceError("redis-server not found: run `make system` (apt-get install "
                           "redis-server)")
    data = Path(state_dir) / "redis"
    data.mkdir(parents=True, exist_ok=True)
    svc = services.start(state_dir, "redis", [binary, "--port", str(u.port or 6379), "--bind",
                                              "127.0.0.1", "--save", "", "--appendonly", "no",
                                              "--dir", str(data)], url)
    deadline = time.monotonic() + 15
    while not redis_answers(url):
        if time.monotonic() > deadline or not services.pid_alive(svc.pid):
            services.stop(state_dir, svc)
            raise ServiceError(f"redis-server did not start on {url}; see {svc.log}")
        time.sleep(0.05)
    say(f"started Redis on {url}")


def start_plugin(state_dir: Path, gateway: str, prometheus: str, redis_url: str, port: int,
                 say: Callable[[str], None], extra_env: dict[str, str] | None = None) -> str:
    url = f"http://127.0.0.1:{port}"
    if services.answers(url + "/healthz"):
        return url
    env = {**os.environ, "OPENFAAS_URL": gateway, "PROMETHEUS_URL": prometheus,
           "REDIS_URL": redis_url, "QUART_PLUGIN_PORT": str(port),
           "QUART_BASIC_AUTH_PASSWORD_FILE": str(Path(state_dir) / "basic-auth-password"),
           **(extra_env or {})}
    svc = services.start(state_dir, "plugin", [sys.executable, "-m", "gateway_plugin"], url,
                         env=env)
    if not services.wait_http(url + "/healthz", 30, lambda: services.pid_alive(svc.pid)):
        services.stop(state_dir, svc)
        raise ServiceError(f"the plugin did not start on {url}; see {svc.log}")
    say(f"started the autoscaling plugin on {url} (decisions: {url}/decisions), log {svc.log}")
    return url
