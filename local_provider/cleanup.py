"""What ``quart-faas down`` stops besides the recorded services: a crashed run's leftovers.

Why (issue 18, finding 1): after ``kill -9`` of the gateway, ``down`` stopped the recorded
services only and left keys_manager, 3 zygotes, 5 replicas (200-500 MB each), the
``/dev/shm`` directory and port 8083 behind.  keys_manager's own records say what it
started, so they are read here, in this order: an agent that still answers is told to stop
with its replicas (it knows them best); whatever its ``state.json`` still lists alive (an
agent killed too) is stopped by pid and start time (procs.py: a recycled pid is left
alone); then T1's directory, the socket and the provider's records go.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from keys_manager.client import AgentError, call
from keys_manager.config import AgentConfig
from keys_manager.procs import Proc, alive, start_time, terminate
from local_provider.adopt import RECORDS


def leftovers(state_dir: Path, say: Callable[[str], None] = print) -> int:
    """Stop what a run in ``state_dir`` left behind; returns how many things it stopped."""
    env = {**os.environ, "QUART_STATE_DIR": str(Path(state_dir).absolute())}
    try:
        cfg = AgentConfig.from_env(env)
    except ValueError as e:
        say(f"keys_manager settings unreadable ({e}): its processes were not looked for")
        return 0
    n = _stop_agent(cfg, say)
    n += _stop_listed(cfg, say)
    shm = {cfg.shm_dir, *_agent_shm(cfg)}
    for d in shm:
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            say(f"removed {d}")
            n += 1
    cfg.socket.unlink(missing_ok=True)
    (cfg.keys_dir / "agent.json").unlink(missing_ok=True)
    (Path(state_dir) / RECORDS).unlink(missing_ok=True)
    return n


def _stop_agent(cfg: AgentConfig, say: Callable[[str], None]) -> int:
    try:
        pid = int(call(cfg.socket, {"op": "ping"}, timeout_s=2)["pid"])
    except (AgentError, KeyError, ValueError):
        return 0
    started = start_time(pid)
    try:
        call(cfg.socket, {"op": "shutdown", "replicas": True}, timeout_s=5)
    except AgentError:
        pass
    deadline = time.monotonic() + 30
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.1)
    terminate(pid, started, 1.0)
    say(f"stopped keys_manager (pid {pid}) with its zygotes and replicas")
    return 1


def _stop_listed(cfg: AgentConfig, say: Callable[[str], None]) -> int:
    try:
        doc = json.loads((cfg.keys_dir / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    n = 0
    for d in [*doc.get("replicas", []), *doc.get("zygotes", [])]:
        try:
            p = Proc.from_json(d)
        except TypeError:
            continue
        if p.alive():
            p.terminate(2.0)
            say(f"stopped {p.kind} of {p.function} (pid {p.pid}) left by a crashed run")
            n += 1
    try:
        info = json.loads((cfg.keys_dir / "agent.json").read_text())
        pid = int(info["pid"])
        mine = f"QUART_KEYS_SOCKET={cfg.socket}".encode()  # not another state dir's agent
        if mine in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            terminate(pid, start_time(pid), 2.0)
            say(f"stopped keys_manager (pid {pid}) that no longer answered")
            n += 1
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return n


def _agent_shm(cfg: AgentConfig) -> list[Path]:
    try:
        return [Path(json.loads((cfg.keys_dir / "agent.json").read_text())["shm_dir"])]
    except (OSError, ValueError, KeyError, TypeError):
        return []
