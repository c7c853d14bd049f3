"""Starting the processes keys_manager owns: a function's zygote, a replica forked from it,
and a replica started fresh (``mode="process"``).

Mechanics only, so that agent.py reads as bookkeeping: which process to start, and what
follows (the records, the T1 pins, ``state.json``), is the agent's.  Every zygote and
replica gets ``QUART_NODE_DIR`` (the agent's keys directory).
"""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keys_manager.cache import Entry
from keys_manager.config import AgentConfig
from keys_manager.procs import Proc, start_time
from keys_manager.request import ReplicaRequest
from keys_manager.zygote import request as zygote_request

UNIX_PATH_MAX = 107


class SpawnError(RuntimeError):
    """The replica could not be made; the message says why (and where the log is)."""


def start_zygote(cfg: AgentConfig, req: ReplicaRequest, key: str, entry: Entry | None,
                 sock_dir: Path, closing: Callable[[], bool]) -> Proc:
    """Start the zygote of ``req.function`` and wait until it answers on its socket (or
    ``closing()`` turns true, or ``cfg.start_timeout_s`` passes: then it is stopped)."""
    sock = sock_dir / f"{req.function}-{key}.sock"
    if len(str(sock)) > UNIX_PATH_MAX:
        raise SpawnError(f"socket path {sock} is longer than {UNIX_PATH_MAX} bytes: "
                         f"use a shorter QUART_KEYS_DIR")
    env = dict(req.env)
    env.pop("QUART_LISTEN_FD", None)
    env.update({"QUART_HANDLER_DIR": str(req.handler_dir), "QUART_FUNCTION_NAME": req.function,
                "QUART_ZYGOTE_SOCKET": str(sock), "max_inflight": str(req.max_inflight),
                "QUART_NODE_DIR": str(cfg.keys_dir)})
    if entry is not None:
        env["QUART_WEIGHTS_PATH"] = str(entry.path)
    # glibc gives each thread that allocates its own arena, and a forked replica keeps every
    # page its request threads filled: 2 arenas halve what 50 calls leave dirty (14.7 -> 8.1
    # MiB, benchmark/studies/replica_memory.py); the function's env may say otherwise
    env.setdefault("MALLOC_ARENA_MAX", "2")
    logp = req.log_path.with_name(f"{req.function}-zygote.log")
    logp.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    with open(logp, "ab") as out:
        popen = subprocess.Popen([cfg.python, str(req.template_dir / "index.py")],
                                 cwd=str(req.workdir), env=env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    z = Proc("zygote", req.function, popen.pid, start_time(popen.pid), sock=str(sock),
             key=key, stage=str(entry.key) if entry else "",
             segment=entry.segment_id if entry else "", log=str(logp), popen=popen)
    deadline = time.monotonic() + cfg.start_timeout_s
    while time.monotonic() < deadline and not closing():
        if popen.poll() is not None:
            raise SpawnError(f"zygote of {req.function} exited with {popen.returncode}; "
                             f"see {logp}")
        if sock.exists() and answers(str(sock)):
            break
        time.sleep(0.02)
    else:
        z.terminate(0)
        raise SpawnError(f"zygote of {req.function} not ready in "
                         f"{cfg.start_timeout_s:g}s; see {logp}")
    return z


def fork_replica(z: Proc, req: ReplicaRequest) -> Proc:
    """A replica forked from zygote ``z``, listening on a fresh loopback port."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1024)
        port = lsock.getsockname()[1]
        ans = zygote_request(z.sock, {"op": "spawn", "name": f"{req.function}-{req.index}",
                                      "log": str(req.log_path)}, fd=lsock.fileno())
    except (OSError, RuntimeError, ValueError) as e:
        raise SpawnError(f"zygote of {req.function} (pid {z.pid}) did not fork: {e}") from e
    finally:
        lsock.close()
    pid = int(ans["pid"])
    return Proc("replica", req.function, pid, start_time(pid), url=f"http://127.0.0.1:{port}",
                key=z.key, zygote_pid=z.pid, index=req.index, log=str(req.log_path))


def start_process(cfg: AgentConfig, req: ReplicaRequest, entry: Entry | None,
                  weights: str) -> Proc:
    """A fresh ``python index.py`` (no zygote): the cold baseline, or T1/T2 without fork."""
    env = dict(req.env)
    env.update({"QUART_HANDLER_DIR": str(req.handler_dir), "QUART_FUNCTION_NAME": req.function,
                "max_inflight": str(req.max_inflight),
                "QUART_NODE_DIR": str(cfg.keys_dir)})
    env.pop("QUART_ZYGOTE_SOCKET", None)
    env.pop("QUART_WEIGHTS_PATH", None)
    if entry is not None and weights != "T3":
        env["QUART_WEIGHTS_PATH"] = str(entry.path if weights == "T1" else entry.disk_path)
    lsock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    env["QUART_LISTEN_FD"] = str(lsock.fileno())
    req.log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(req.log_path, "ab") as out:
            popen = subprocess.Popen(
                [cfg.python, str(req.template_dir / "index.py")], cwd=str(req.workdir),
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                pass_fds=(lsock.fileno(),), start_new_session=True)
        port = lsock.getsockname()[1]
    finally:
        lsock.close()
    return Proc("replica", req.function, popen.pid, start_time(popen.pid),
                url=f"http://127.0.0.1:{port}", index=req.index, log=str(req.log_path),
                popen=popen)


def recipe(req: ReplicaRequest) -> dict[str, Any]:
    """The request a zygote was started from, as ``ReplicaRequest.from_json`` reads it."""
    return {"function": req.function, "index": req.index, "handler_dir": str(req.handler_dir),
            "template_dir": str(req.template_dir), "workdir": str(req.workdir),
            "env": dict(req.env), "log_path": str(req.log_path),
            "max_inflight": req.max_inflight}


def answers(sock: str) -> bool:
    """Whether the zygote behind ``sock`` answers a ping (within 2 s)."""
    try:
        zygote_request(sock, {"op": "ping"}, timeout_s=2)
        return True
    except (OSError, RuntimeError, ValueError):
        return False
