"""How a function replica becomes a running process, behind a two-method interface.

The registry only sees ``ReplicaLauncher.launch(spec) -> ReplicaHandle``: the
next launcher (keys_manager's fork server) forks replicas from a warm zygote
and owns those children itself, so nothing here may assume a ``Popen``.

The listening socket is created here, bound to 127.0.0.1:0 and handed to the
child (``QUART_LISTEN_FD``): the port is known before the child runs and no
other process can take it in between.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import urllib3

log = logging.getLogger("local_provider.replicas")


@dataclass(frozen=True)
class ReplicaSpec:
    """What a launcher needs to run one replica of a function."""

    function: str
    index: int
    handler_dir: Path
    template_dir: Path
    workdir: Path
    env: dict[str, str]
    log_path: Path
    max_inflight: int = 8
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()  # faas-cli constraints: where the replica may run


class ReplicaHandle(Protocol):
    """A running (or starting) replica; ``url`` accepts HTTP once ``/_/health`` says 200."""

    pid: int
    url: str
    info: dict[str, Any]

    def alive(self) -> bool: ...

    def terminate(self, grace_s: float) -> None:
        """Ask the replica to stop, kill it after ``grace_s``; returns once it is gone."""


class ReplicaLauncher(Protocol):
    def launch(self, spec: ReplicaSpec) -> ReplicaHandle: ...


@runtime_checkable
class NodeFleet(Protocol):
    """A launcher over simulated nodes (local_provider/nodes.py), one of which can fail."""

    @property
    def nodes(self) -> Mapping[str, object]: ...

    def fail(self, node: str) -> dict[str, Any]: ...


class ProcessHandle:
    """A replica that is a child process of this provider."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, info: dict[str, Any]) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.url = url
        self.info = info
        self._lock = threading.Lock()

    def alive(self) -> bool:
        with self._lock:
            return self._proc.poll() is None

    def returncode(self) -> int | None:
        with self._lock:
            return self._proc.poll()

    def terminate(self, grace_s: float) -> None:
        with self._lock:
            if self._proc.poll() is not None:
                return
            try:
                self._proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                return
        try:
            self._proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("replica pid %d ignored SIGTERM for %.1fs: SIGKILL", self.pid, grace_s)
            with self._lock:
                if self._proc.poll() is None:
                    self._proc.kill()
            self._proc.wait()


class ProcessLauncher:
    """Runs ``python <template>/index.py`` with the handler folder, one process per replica."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def launch(self, spec: ReplicaSpec) -> ProcessHandle:
        index_py = spec.template_dir / "index.py"
        if not index_py.is_file():
            raise FileNotFoundError(f"template {spec.template_dir} has no index.py")
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            port = sock.getsockname()[1]
            env = dict(spec.env)
            env.update({
                "QUART_HANDLER_DIR": str(spec.handler_dir),
                "QUART_FUNCTION_NAME": spec.function,
                "QUART_LISTEN_FD": str(sock.fileno()),
                "max_inflight": str(spec.max_inflight),
            })
            with open(spec.log_path, "ab") as logf:
                logf.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting "
                           f"{spec.function}-{spec.index} on 127.0.0.1:{port}\n".encode())
                logf.flush()
                proc = subprocess.Popen(
                    [self.python, str(index_py)], cwd=str(spec.workdir), env=env,
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                    # Own process group: a Ctrl-C at the terminal reaches the provider
                    # only, which then stops replicas in order.
                    start_new_session=True,
                )
        finally:
            # The child holds its copy; keeping ours would let connections queue on a
            # socket nobody serves after the child dies (they must be refused instead).
            sock.close()
        return ProcessHandle(proc, f"http://127.0.0.1:{port}",
                             {"tier": "process", "port": port, "log": str(spec.log_path)})


def wait_healthy(handle: ReplicaHandle, timeout_s: float, stop: Callable[[], bool]) -> bool:
    """Poll ``GET /_/health`` until 200; False when the replica died, timed out or we stop.

    The socket accepts connections as soon as it listens, long before the app
    is imported, so each probe has a short timeout and the loop retries.
    """
    deadline = time.monotonic() + timeout_s
    url = handle.url + getattr(handle, "health_path", "/_/health")  # a pod: /_/ready
    while time.monotonic() < deadline and not stop():
        if not handle.alive():
            return False
        try:  # urllib3 directly: ~1 ms less per probe than requests, on the scale-up path
            if _PROBE.request("GET", url, timeout=0.5, retries=False).status == 200:
                return True
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.005)
    return False


_PROBE = urllib3.PoolManager(num_pools=64, maxsize=2)


def env_for(function_env: dict[str, str], defaults: dict[str, str] | None = None) -> dict[str, str]:
    """Replica environment: the provider's own, then our defaults, then the function's envVars."""
    env = dict(os.environ)
    env.update(defaults or {})
    env.update(function_env)
    return env
