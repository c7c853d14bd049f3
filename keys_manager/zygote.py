"""A warm zygote: one process per stage that has imported torch and the handler
(and so mapped the stage's weights) and fork()s new replicas on request.

Why fork: a fresh replica pays ~2.5 s to import torch plus the weight load; a
child of a loaded parent shares all of it copy-on-write and only has to start
its HTTP server.

Protocol: a Unix stream socket (mode 0600), one JSON line in, one JSON line out.
  {"op": "ping"}                                   -> {"ok": true, "pid": P}
  {"op": "spawn", "name": N, "log": PATH} + 1 fd   -> {"ok": true, "pid": C, "fork_ms": F}
  {"op": "prefork", "name": N, "log": PATH} + 1 fd -> the same, and the connection stays open
The fd (SCM_RIGHTS) is the replica's listening socket, bound by the caller, so
the child opens no port of its own choosing and the caller knows the URL.

``prefork`` makes an idle worker for keys_manager's warm pool (keys_manager/pool.py): it
serves at once, and the child keeps the request's connection, on which one more JSON line,
``{"name": N, "log": PATH}``, hands it over as a replica (its HOSTNAME and log become that
replica's; it answers ``{"ok": true}``).  A connection closed before that (the agent went
away, or drained its pool) makes the worker exit: no idle process outlives its pool.

Fork safety: the zygote stays single-threaded and never runs a forward pass,
so no intra-op thread pool exists to be lost in fork(); each child sets its
torch thread count *after* fork (the pool is created in the child), re-seeds
every RNG, closes the zygote's sockets and resets signal handlers.  A zygote
never initialises CUDA (a CUDA context cannot be used in a forked child).
The thread count set here holds for the child's main thread only: OpenMP keeps
it per OS thread, so the request threads set it themselves before computing
(functions/stage/compute.py says why a replica's answers depend on it).
"""
from __future__ import annotations

import gc
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

MAX_REQUEST_BYTES = 65536


def _reseed() -> None:
    """Fresh seeds for the RNGs a child can reach.  Only modules the zygote already imported:
    touching ``numpy.random`` would import it (numpy 2 loads it lazily: 17 ms per child),
    and ``torch.manual_seed`` also wakes the accelerator seeders (3 ms) where a CPU-only
    zygote needs just the default CPU generator."""
    seed = int.from_bytes(os.urandom(8), "little")
    random.seed(seed)
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed(seed % 2**32)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.default_generator.manual_seed(seed)
        torch.set_num_threads(max(1, int(os.environ.get("QUART_TORCH_THREADS", "1") or 1)))


def _identity(name: str, log: str) -> None:
    """Become replica ``name``: its HOSTNAME (read per request) and its log on stdout/err."""
    if log:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
    os.environ["HOSTNAME"] = name or os.environ.get("HOSTNAME", "")


def _warm(fd: int) -> float:
    """Warm a pooled worker before it is counted idle: the handler's own ``warmup`` (as the
    zygote ran it, now in this process: the pages a first request dirties are dirtied here)
    and one ``GET /_/health`` through its server, so that its first real request, and the
    provider's health probe, cost what a warm replica's do.  Returns the milliseconds."""
    t0 = time.perf_counter()
    warmup = getattr(sys.modules.get("function.handler"), "warmup", None)
    if callable(warmup):
        warmup()
    with socket.socket(fileno=os.dup(fd)) as lsock:
        addr = lsock.getsockname()
    with socket.create_connection(addr[:2], timeout=60) as s:
        s.sendall(b"GET /_/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    return (time.perf_counter() - t0) * 1e3


def _await_handover(control: socket.socket, fd: int) -> None:
    """A pooled worker's life before it is a replica: warm up, say so, then wait for the
    hand-over line (or the end of the pool: exit)."""
    try:
        control.settimeout(None)
        _reply(control, {"ok": True, "warm_ms": round(_warm(fd), 3)})
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = control.recv(MAX_REQUEST_BYTES)
            if not chunk or len(buf) > MAX_REQUEST_BYTES:
                os._exit(0)  # the agent is gone or drained the pool: never a replica
            buf += chunk
        doc = json.loads(buf.decode())
        _identity(str(doc.get("name", "")), str(doc.get("log", "")))
        control.sendall(b'{"ok": true}\n')
        control.close()
    except (OSError, ValueError, AttributeError):
        os._exit(1)
    except BaseException:  # noqa: BLE001 - a warm-up that fails: this worker is not fit
        import traceback

        traceback.print_exc()
        os._exit(1)


def _child(fd: int, name: str, log: str, serve_fd: Callable[[int], None],
           control: socket.socket | None = None) -> None:
    """Runs in the forked replica (or pooled worker, with ``control``); never returns."""
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()  # its own session: a signal to the zygote's group does not reach it
        _identity(name, log)
        _reseed()
        if control is not None:
            import threading  # only in the child: the zygote itself stays single-threaded

            threading.Thread(target=_await_handover, args=(control, fd), daemon=True,
                             name="handover").start()
        serve_fd(fd)
    except BaseException:  # noqa: BLE001 - report, then leave without running zygote code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def serve_zygote(path: str, serve_fd: Callable[[int], None]) -> None:
    """Accept spawn requests on the Unix socket at ``path`` until SIGTERM."""
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        srv.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    srv.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    # Move every object allocated so far (torch, the handler, the model) out of the
    # collector's reach: a child's first collections would otherwise write to the header
    # of each of them and copy-on-write-fault hundreds of MB of pages it never changes.
    gc.collect()
    gc.freeze()
    if "keys_manager.segment" in sys.modules:  # the stage's weights are mapped: see there
        sys.modules["keys_manager.segment"].share_page_tables()
    threads = len(os.listdir("/proc/self/task"))
    print(f"zygote pid {os.getpid()} ready on {path} ({threads} native threads: children get "
          f"only the forking one)", flush=True)
    try:
        while True:
            conn, _ = srv.accept()
            with conn:
                _one(conn, srv, serve_fd)
    finally:
        srv.close()
        if os.path.exists(path):
            os.unlink(path)


def _one(conn: socket.socket, srv: socket.socket, serve_fd: Callable[[int], None]) -> None:
    conn.settimeout(5)
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST_BYTES, 1)
        req = json.loads(data.decode() or "{}")
    except (OSError, ValueError) as e:
        _reply(conn, {"ok": False, "error": f"bad request: {e}"})
        return
    if not isinstance(req, dict):
        req = {}
    op = req.get("op")
    if op == "ping":
        for fd in fds:
            os.close(fd)
        _reply(conn, {"ok": True, "pid": os.getpid()})
        return
    if op not in ("spawn", "prefork") or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        _reply(conn, {"ok": False, "error": "expected op ping, or spawn or prefork with one "
                                            "socket fd"})
        return
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        srv.close()
        if op == "spawn":
            conn.close()
        _child(fds[0], str(req.get("name", "")), str(req.get("log", "")), serve_fd,
               conn if op == "prefork" else None)
    os.close(fds[0])
    _reply(conn, {"ok": True, "pid": pid, "fork_ms": (time.perf_counter() - t0) * 1e3})


def _reply(conn: socket.socket, doc: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(doc).encode() + b"\n")
    except OSError:
        pass


def request(path: str, doc: dict[str, Any], fd: int | None = None,
            timeout_s: float = 10.0) -> dict[str, Any]:
    """Client side: send one request (and optionally a socket fd), return the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        socket.send_fds(s, [json.dumps(doc).encode()], [fd] if fd is not None else [])
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf.decode() or "{}")
    if not answer.get("ok"):
        raise RuntimeError(f"zygote at {path}: {answer.get('error', 'no answer')}")
    return answer
