"""The warm pool: per function, a few idle workers forked from its zygote ahead of need.

Why: a replica forked on the scale call pays the fork, the child's server start and the
provider's first health probe on the critical path (tens of ms on a busy node).  A pooled
worker has done all of that before anyone asked: it serves on its own loopback socket,
but no replica record names it and the provider does not route to it.  Taking one is a
hand-over (one JSON line on the connection the worker kept from its ``prefork``: it takes
the replica's name and log), not a fork.  The pool refills in the background, one worker
at a time through the same zygote, from the agent's next reap tick (``QUART_KEYS_REAP_S``)
on: not at once, because forking and warming a worker (the handler's warm-up is a forward
pass) on a busy node would take CPU from the replica just handed over, in the very
milliseconds it answers its first requests (measured: +20 ms to ready on 2 busy cores).
The zygote holds the weights, so a pooled worker costs only the pages its own start and
warm-up dirtied (``status`` reports its PSS).

A pooled worker is warm: it ran the handler's ``warmup`` and answered ``GET /_/health``
through its own server before it joined the pool (keys_manager/zygote.py), so the provider
need not probe it (a handle says ``pooled``) and its first request costs a warm one.

A worker is handed over only by the zygote it came from (same pid, config key and T1
segment): one forked before a segment was rebuilt or an env change restarted the zygote
is stale and is stopped instead.  A pooled worker whose connection closes exits
(keys_manager/zygote.py), so an agent that dies leaves no idle process behind, and a
restarted agent builds its pool again.

Sizes: ``QUART_KEYS_POOL`` per function by default (1), changed per function through the
agent's ``pool`` op (the autoscaler's forecast of the next scale-up).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys_manager.procs import Proc, start_time
from keys_manager.request import NAME_RE, ReplicaRequest

log = logging.getLogger("keys_manager.pool")
MAX_POOL = 64
HANDOVER_TIMEOUT_S = 2.0
WARM_TIMEOUT_S = 120.0  # a worker's warm-up (the handler's warmup, on a busy node)


@dataclass
class Pooled:
    """An idle worker and the connection that hands it over."""

    proc: Proc
    control: socket.socket

    def stop(self, grace_s: float = 2.0) -> None:
        """Closing the connection makes it exit; the signal covers a worker that hangs."""
        try:
            self.control.close()
        except OSError:
            pass
        self.proc.terminate(grace_s)


def prefork(z: Proc, req: ReplicaRequest, timeout_s: float = 10.0) -> Pooled:
    """Ask zygote ``z`` for an idle worker listening on a fresh loopback port."""
    lsock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        port = lsock.getsockname()[1]
        ctl.settimeout(timeout_s)
        ctl.connect(z.sock)
        logp = req.log_path.with_name(f"{req.function}-pool.log")
        doc = {"op": "prefork", "name": f"{req.function}-pool", "log": str(logp)}
        socket.send_fds(ctl, [json.dumps(doc).encode()], [lsock.fileno()])
        # two lines, in either order: the zygote's (the pid) and the worker's (warm)
        ans: dict[str, Any] = {}
        lines = _Lines(ctl)
        for _ in range(2):
            got = json.loads(lines.next() or b"{}")
            if not got.get("ok"):
                raise RuntimeError(f"{req.function}: pooled worker not made: "
                                   f"{got.get('error', 'no answer (see its pool log)')}")
            ans |= got
            ctl.settimeout(WARM_TIMEOUT_S)
    except BaseException:
        ctl.close()
        raise
    finally:
        lsock.close()
    pid = int(ans["pid"])
    proc = Proc("pool", req.function, pid, start_time(pid), url=f"http://127.0.0.1:{port}",
                key=z.key, stage=z.stage, segment=z.segment, tier="T0", zygote_pid=z.pid,
                spawn_ms=float(ans.get("warm_ms", 0.0)))
    return Pooled(proc, ctl)


def hand_over(w: Pooled, req: ReplicaRequest) -> Proc | None:
    """Make pooled worker ``w`` replica ``req.index`` of ``req.function``; None (and ``w``
    stopped) when it does not confirm."""
    try:
        w.control.settimeout(HANDOVER_TIMEOUT_S)
        w.control.sendall(json.dumps({"name": f"{req.function}-{req.index}",
                                      "log": str(req.log_path)}).encode() + b"\n")
        ok = json.loads(_Lines(w.control).next() or b"{}").get("ok") is True
    except (OSError, ValueError):
        ok = False
    if not ok or not w.proc.alive():
        log.warning("pooled worker pid %d of %s did not take the hand-over: stopping it",
                    w.proc.pid, req.function)
        w.stop(0.5)
        return None
    w.control.close()
    p = w.proc
    return Proc("replica", req.function, p.pid, p.started, url=p.url, key=p.key,
                zygote_pid=p.zygote_pid, index=req.index, log=str(req.log_path))


class _Lines:
    """JSON lines off a stream socket (two may come in one read); b"" at the end."""

    def __init__(self, s: socket.socket) -> None:
        self.s, self.buf = s, b""

    def next(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


class WarmPool:
    """Idle workers per function; ``make(function)`` forks one (None: no zygote to ask)."""

    def __init__(self, default_size: int, make: Callable[[str], Pooled | None]) -> None:
        self.default_size = default_size
        self.make = make
        self.sizes: dict[str, int] = {}
        self.idle: dict[str, list[Pooled]] = {}
        self.handed = 0
        self.lock = threading.Lock()
        self._filling: dict[str, threading.Thread] = {}
        self._closed = False

    def size(self, function: str) -> int:
        return self.sizes.get(function, self.default_size)

    def set_size(self, function: str, n: Any) -> None:
        if not NAME_RE.match(function):
            raise ValueError(f"invalid function name {function!r}")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_POOL:
            raise ValueError(f"pool size must be an integer in [0, {MAX_POOL}]")
        with self.lock:
            self.sizes[function] = n
            have = self.idle.get(function, [])
            surplus, self.idle[function] = have[n:], have[:n]
        for w in surplus:
            w.stop()
        self.refill(function)

    def has_idle(self, function: str) -> bool:
        with self.lock:
            return bool(self.idle.get(function))

    def take(self, function: str, z: Proc) -> Pooled | None:
        """An idle worker forked by ``z`` as it is now; stale ones are stopped."""
        with self.lock:
            have = self.idle.get(function, [])
            fresh = [w for w in have if _made_by(w, z)]
            stale = [w for w in have if w not in fresh]
            chosen = fresh.pop(0) if fresh else None
            self.idle[function] = fresh
            if chosen is not None:
                self.handed += 1
        for w in stale:
            w.stop()
        return chosen

    def prune(self, zygotes: Mapping[str, Proc]) -> None:
        """Stop idle workers that no current zygote made: a zygote stopped (evicted,
        recycled, dead) or restarted while one of its workers was being forked."""
        with self.lock:
            stale = []
            for f, ws in self.idle.items():
                z = zygotes.get(f)
                self.idle[f] = [w for w in ws if z is not None and _made_by(w, z)]
                stale += [w for w in ws if w not in self.idle[f]]
        for w in stale:
            w.stop()

    def refill(self, function: str) -> None:
        """Fork up to the pool's size in the background (one filler per function)."""
        with self.lock:
            if self._closed or function in self._filling or \
                    len(self.idle.get(function, [])) >= self.size(function):
                return
            t = threading.Thread(target=self._fill, args=(function,), daemon=True,
                                 name=f"pool-{function}")
            self._filling[function] = t
        t.start()

    def _fill(self, function: str) -> None:
        try:
            while True:
                with self.lock:
                    if self._closed or len(self.idle.get(function, [])) >= self.size(function):
                        return
                w = self.make(function)
                if w is None:
                    return
                with self.lock:
                    keep = not self._closed and \
                        len(self.idle.get(function, [])) < self.size(function)
                    if keep:
                        self.idle.setdefault(function, []).append(w)
                if not keep:
                    w.stop()
                    return
        except Exception as e:  # noqa: BLE001 - the next hand-over forks instead
            log.warning("pool of %s not refilled: %s", function, e)
        finally:
            with self.lock:
                self._filling.pop(function, None)

    def drain(self, function: str) -> None:
        """Stop the idle workers of ``function`` (its zygote is going)."""
        with self.lock:
            gone = self.idle.pop(function, [])
        for w in gone:
            w.stop()

    def reap(self) -> int:
        """Forget workers that died; the pools refill."""
        with self.lock:
            dead = {f: [w for w in ws if not w.proc.alive()] for f, ws in self.idle.items()}
            for f, ws in dead.items():
                self.idle[f] = [w for w in self.idle[f] if w not in ws]
        for ws in dead.values():
            for w in ws:
                w.stop(0)
        return sum(len(ws) for ws in dead.values())

    def status(self) -> dict[str, Any]:
        with self.lock:
            idle = {f: [w.proc.to_json() for w in ws] for f, ws in self.idle.items() if ws}
            sizes = dict(self.sizes)
        return {"default_size": self.default_size, "sizes": sizes, "handed_over": self.handed,
                "idle": idle, "pss_bytes": {f: sum(_pss(p["pid"]) for p in ws)
                                            for f, ws in idle.items()}}

    def close(self) -> None:
        with self.lock:
            self._closed = True
            fillers = list(self._filling.values())
        for t in fillers:
            t.join(10.0)
        with self.lock:
            fns = list(self.idle)
        for f in fns:
            self.drain(f)


def _made_by(w: Pooled, z: Proc) -> bool:
    return (w.proc.zygote_pid, w.proc.key, w.proc.segment) == (z.pid, z.key, z.segment)


def _pss(pid: int) -> int:
    """The worker's proportional set size (what it adds to the node), 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
