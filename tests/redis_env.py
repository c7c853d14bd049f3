"""A real redis-server on a free port, which tests can stop and start again."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from local_provider import services


class RedisServer:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or services.free_port()
        self.proc: subprocess.Popen | None = None
        binary = shutil.which("redis-server")
        if binary is None:  # the benchmarks use this too: a plain error, not pytest.fail
            raise RuntimeError("redis-server not found on PATH: `make setup` installs it with "
                               "scripts/setup-system.sh (Debian package redis-server)")
        self.cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(root)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> RedisServer:
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start: {(self.root / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
