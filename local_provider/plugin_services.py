"""`quart-faas up --with-plugin`: a Redis server and the autoscaling plugin beside the
gateway, as background services recorded like the gateway (``quart-faas down`` stops them).

Redis is started from the Debian ``redis-server`` binary only when nothing answers at
the URL, without persistence (the plugin writes its state back after a Redis restart);
an existing Redis is used as it is.  The Redis we start takes a password (issue 18: it had
none, so anyone on the machine could rewrite the plugin's state): the URL's own, else one
generated once into ``<state>/redis-password`` (mode 0600).  It reaches redis-server through
a 0600 config file, not its command line (``/proc/PID/cmdline`` is readable by every user),
and the plugin through ``REDIS_URL`` in its environment (readable by its user only).
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import redis

from local_provider import services


class ServiceError(RuntimeError):
    pass


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` readable by its owner only, from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _conf_str(value: str) -> str:
    """A redis.conf string argument, quoted (a path or password with a space or a quote)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_password(state_dir: Path) -> str:
    """The local Redis' password: generated once, then read from ``<state>/redis-password``."""
    path = Path(state_dir) / "redis-password"
    if not path.is_file():
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def with_password(url: str, password: str) -> str:
    """``redis://127.0.0.1:6379/0`` -> ``redis://:PASSWORD@127.0.0.1:6379/0``."""
    u = urlparse(url)
    host = u.netloc.rpartition("@")[2]
    return u._replace(netloc=f"{quote(u.username or '', safe='')}:"
                             f"{quote(password, safe='')}@{host}").geturl()


def ensure_redis(state_dir: Path, url: str, say: Callable[[str], None]) -> str:
    """A Redis answering for the plugin; returns the URL to give it (with the password
    when the Redis is ours)."""
    if redis_answers(url):
        return url
    u = urlparse(url)
    if u.hostname not in ("127.0.0.1", "localhost"):
        raise ServiceError(f"Redis at {url} does not answer (and is not ours to start)")
    password = unquote(u.password or "") or redis_password(state_dir)
    authed = with_password(url, password)
    if redis_answers(authed):  # ours, from an earlier `up`
        return authed
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise ServiceError("redis-server not found: run `make system` (apt-get install "
                           "redis-server)")
    data = (Path(state_dir) / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "redis.conf"
    _write_private(conf, f"port {u.port or 6379}\nbind 127.0.0.1\nsave \"\"\n"
                         f"appendonly no\ndir {_conf_str(str(data))}\n"
                         f"requirepass {_conf_str(password)}\n")
    svc = services.start(state_dir, "redis", [binary, str(conf)], url)
    deadline = time.monotonic() + 15
    while not redis_answers(authed):
        if time.monotonic() > deadline or not services.pid_alive(svc.pid):
            services.stop(state_dir, svc)
            raise ServiceError(f"redis-server did not start on {url}; see {svc.log}")
        time.sleep(0.05)
    say(f"started Redis on {url}, with a password")
    return authed


def start_plugin(state_dir: Path, gateway: str, prometheus: str, redis_url: str, port: int,
                 say: Callable[[str], None], extra_env: dict[str, str] | None = None) -> str:
    url = f"http://127.0.0.1:{port}"
    if services.answers(url + "/livez"):
        return url
    env = {**os.environ, "OPENFAAS_URL": gateway, "PROMETHEUS_URL": prometheus,
           "REDIS_URL": redis_url, "QUART_PLUGIN_PORT": str(port),
           "QUART_BASIC_AUTH_PASSWORD_FILE": str(Path(state_dir) / "basic-auth-password"),
           **(extra_env or {})}
    # the node agent beside it, told how many workers to keep pre-forked (pool hints)
    env.setdefault("QUART_KEYS_SOCKET", str(Path(state_dir).absolute() / "keys_manager.sock"))
    svc = services.start(state_dir, "plugin", [sys.executable, "-m", "gateway_plugin"], url,
                         env=env)
    # /livez: up and cycling; /healthz may rightly say 503 until Prometheus has scraped
    if not services.wait_http(url + "/livez", 30, lambda: services.pid_alive(svc.pid)):
        services.stop(state_dir, svc)
        raise ServiceError(f"the plugin did not start on {url}; see {svc.log}")
    say(f"started the autoscaling plugin on {url} (decisions: {url}/decisions), log {svc.log}")
    return url
