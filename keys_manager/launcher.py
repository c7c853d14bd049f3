"""Replicas by fork: the local provider's ReplicaLauncher backed by warm zygotes.

One zygote per function configuration (handler, template, workdir, env): it
is started on the first launch (a cold start, paid once), and every replica
after that is fork()ed from it.  A zygote that died is rebuilt on the next
launch; replicas already forked keep serving (they are not its threads).
Enabled in the provider with ``QUART_LAUNCHER=fork``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from keys_manager.zygote import request

log = logging.getLogger("keys_manager.launcher")
PER_REPLICA_ENV = frozenset({"HOSTNAME", "QUART_LISTEN_FD"})


def _start_time(pid: int) -> int | None:
    """Process start time (clock ticks since boot): tells a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class ForkedHandle:
    """A replica forked by a zygote: not our child, so liveness is read from /proc."""

    def __init__(self, pid: int, url: str, info: dict[str, Any]) -> None:
        self.pid = pid
        self.url = url
        self.info = info
        self._started = _start_time(pid)

    def alive(self) -> bool:
        return self._started is not None and _start_time(self.pid) == self._started

    def terminate(self, grace_s: float) -> None:
        if not self.alive():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.alive():
            log.warning("forked replica pid %d ignored SIGTERM for %.1fs: SIGKILL", self.pid,
                        grace_s)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            while self.alive():
                time.sleep(0.01)


class Zygote:
    def __init__(self, proc: subprocess.Popen[bytes], sock: Path, key: str) -> None:
        self.proc, self.sock, self.key = proc, sock, key

    def alive(self) -> bool:
        return self.proc.poll() is None


class ForkLauncher:
    """``launch(spec)``: ensure the function's zygote, then fork a replica from it."""

    def __init__(self, state_dir: Path, python: str = sys.executable,
                 start_timeout_s: float = 120.0) -> None:
        self.dir = Path(state_dir) / "zygotes"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.python = python
        self.start_timeout_s = start_timeout_s
        self._zygotes: dict[str, Zygote] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(spec: Any) -> str:
        """Same key, same zygote: per-replica variables (set in the child) are left out."""
        env = sorted((k, v) for k, v in spec.env.items() if k not in PER_REPLICA_ENV)
        doc = json.dumps([str(spec.handler_dir), str(spec.template_dir), str(spec.workdir), env])
        return hashlib.sha256(doc.encode()).hexdigest()[:12]

    def ensure(self, spec: Any) -> tuple[Zygote, bool]:
        """The function's zygote, started (cold) when missing, dead or out of date."""
        key = self._key(spec)
        with self._lock:
            z = self._zygotes.get(spec.function)
            if z is not None and z.alive() and z.key == key:
                return z, False
            if z is not None:
                self._stop(z)
            z = self._start(spec, key)
            self._zygotes[spec.function] = z
            return z, True

    def _start(self, spec: Any, key: str) -> Zygote:
        sock = self.dir / f"{spec.function}-{key}.sock"
        env = dict(spec.env)
        env.update({"QUART_HANDLER_DIR": str(spec.handler_dir), "QUART_FUNCTION_NAME": spec.function,
                    "QUART_ZYGOTE_SOCKET": str(sock), "max_inflight": str(spec.max_inflight)})
        env.pop("QUART_LISTEN_FD", None)
        logp = spec.log_path.with_name(f"{spec.function}-zygote.log")
        logp.parent.mkdir(parents=True, exist_ok=True)
        with open(logp, "ab") as out:
            proc = subprocess.Popen([self.python, str(spec.template_dir / "index.py")],
                                    cwd=str(spec.workdir), env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"zygote of {spec.function} exited with {proc.returncode}; "
                                   f"see {logp}")
            if sock.exists():
                try:
                    request(str(sock), {"op": "ping"}, timeout_s=2)
                    log.info("zygote of %s ready (pid %d)", spec.function, proc.pid)
                    return Zygote(proc, sock, key)
                except (OSError, RuntimeError, ValueError):
                    pass
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise RuntimeError(f"zygote of {spec.function} not ready in {self.start_timeout_s:.0f}s")

    def launch(self, spec: Any) -> ForkedHandle:
        t0 = time.perf_counter()
        z, cold = self.ensure(spec)
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(128)
            port = lsock.getsockname()[1]
            ans = request(str(z.sock), {"op": "spawn", "name": f"{spec.function}-{spec.index}",
                                        "log": str(spec.log_path)}, fd=lsock.fileno())
        finally:
            lsock.close()
        info = {"tier": "T3-cold" if cold else "T0", "zygote_pid": z.proc.pid,
                "fork_ms": round(ans["fork_ms"], 3),
                "launch_ms": round((time.perf_counter() - t0) * 1e3, 3), "port": port,
                "log": str(spec.log_path)}
        return ForkedHandle(int(ans["pid"]), f"http://127.0.0.1:{port}", info)

    def _stop(self, z: Zygote, grace_s: float = 5.0) -> None:
        if z.alive():
            z.proc.terminate()
            try:
                z.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                z.proc.kill()
                z.proc.wait()
        z.sock.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop every zygote (replicas are the registry's to stop)."""
        with self._lock:
            for z in self._zygotes.values():
                self._stop(z)
            self._zygotes.clear()
