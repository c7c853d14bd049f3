"""Background services that ``quart-faas up`` starts and ``down`` stops.

Each is recorded in ``<state>/run/<name>.json`` (pid, command, url, log), so
``down`` stops exactly what ``up`` started, and checks the pid still runs the
recorded command before signalling it (pids are recycled).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import requests


@dataclass
class Service:
    name: str
    pid: int
    cmd: list[str]
    url: str
    log: str


def run_dir(state_dir: Path) -> Path:
    d = Path(state_dir) / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def start(state_dir: Path, name: str, cmd: list[str], url: str,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Service:
    log = Path(state_dir) / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    svc = Service(name, proc.pid, cmd, url, str(log))
    (run_dir(state_dir) / f"{name}.json").write_text(json.dumps(asdict(svc)))
    return svc


def recorded(state_dir: Path) -> list[Service]:
    out = []
    for f in sorted(run_dir(state_dir).glob("*.json")):
        try:
            out.append(Service(**json.loads(f.read_text())))
        except (ValueError, TypeError):
            f.unlink(missing_ok=True)
    return out


def _runs(svc: Service) -> bool:
    try:
        cmdline = Path(f"/proc/{svc.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # first word: some servers (redis-server) rewrite their title to "binary host:port"
    first = cmdline[0].decode(errors="replace").split(" ", 1)[0] if cmdline else ""
    return first == svc.cmd[0]


def stop(state_dir: Path, svc: Service, grace_s: float = 15.0) -> bool:
    """SIGTERM the service's process group, SIGKILL after the grace period."""
    stopped = False
    if _runs(svc):
        try:
            os.killpg(svc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while _runs(svc) and time.monotonic() < deadline:
            _reap(svc.pid)
            time.sleep(0.1)
        if _runs(svc):
            try:
                os.killpg(svc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(svc.pid)
        stopped = True
    (run_dir(state_dir) / f"{svc.name}.json").unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_http(url: str, timeout_s: float, alive: Callable[[], bool] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False


_GIVEN: set[int] = set()
_GIVEN_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and never handed out before by this process.  Callers pick several
    before binding any, and the kernel may give a just-closed port again: a test once got
    the same port for the gateway's metrics and Prometheus, and Prometheus never started."""
    with _GIVEN_LOCK:
        for _ in range(100):
            with socket.socket() as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port
    raise OSError(f"no free port on {host} that was not handed out already")


def pid_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = Path(f"/proc/{pid}/stat")
    return not (st.exists() and st.read_text().split(")")[-1].split()[0] == "Z")
