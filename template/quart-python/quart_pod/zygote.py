"""The pod's zygote: it holds the loaded stage and the listening socket, and forks workers.

One thread, one ``selectors`` loop, so fork() never loses a thread that held a lock.
The loop watches: the control socket (requests its workers relay), the control port
(QUART_CONTROL_PORT: HTTP from the plugin and Prometheus, port.py), the event pipe
(worker ready / retiring), and a self-pipe that SIGCHLD and SIGTERM write to
(``signal.set_wakeup_fd``). Each turn it reaps dead workers, forks or retires workers
until the count matches the target, and answers the ``PUT`` requests whose change is
now applied.

"Applied" means: ``workers`` workers accept on the socket, and every retired worker has
said it stopped accepting (it then finishes its calls, at most QUART_POD_DRAIN_S, and
exits). Not "has exited": the worker relaying a PUT may be among the retired, and it
exits only after answering it.

The control socket is an abstract unix socket (no file to leave behind after kill -9)
with a random name; a connection is served only when its peer (SO_PEERCRED) is one of
this zygote's workers, since other containers of the pod share the network namespace
and the token check happens in the worker.
"""
from __future__ import annotations

import functools
import gc
import json
import logging
import os
import secrets
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from . import procs
from .config import PodConfig
from .metrics import PodMetrics
from .port import ControlPort
from .shared import READY, RETIRING, Events, Slots

log = logging.getLogger("quart.pod")
MAX_REQUEST = 1 << 16


@dataclass
class Worker:
    pid: int
    slot: int
    forked: float  # perf_counter at fork()
    ready_at: float = 0.0
    retiring: bool = False  # SIGTERM sent
    acked: bool = False  # it said it stopped accepting
    kill_at: float = float("inf")  # monotonic: SIGKILL a retired worker still there then


@dataclass
class Waiter:
    conn: socket.socket
    deadline: float
    reply: Callable[[dict], None]  # the answer's way back: the unix socket, or HTTP


class Zygote:
    def __init__(self, cfg: PodConfig, work: Callable[[Zygote, int], None]) -> None:
        """``work(zygote, slot)`` runs in each forked worker and serves until it retires."""
        self.cfg, self.work = cfg, work
        self.pid = os.getpid()
        self.target = cfg.workers
        self.slots, self.events = Slots(cfg.max_workers), Events()
        self.metrics = PodMetrics(cfg.max_workers)
        self.workers: dict[int, Worker] = {}
        self.waiters: list[Waiter] = []
        self.reading: dict[socket.socket, bytearray] = {}
        self.keep_pid = 0  # the worker relaying the latest PUT: retired last
        self.failures, self.not_before = 0, 0.0
        self.stopping, self.stop_deadline = False, 0.0
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(f"\0quart-pod-{self.pid}-{secrets.token_hex(8)}")
        self.ctl.listen(64)
        self.ctl.setblocking(False)
        self.address = self.ctl.getsockname()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ctl, selectors.EVENT_READ, self._accept)
        self.sel.register(self.events.r, selectors.EVENT_READ, self._on_events)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_wake)
        self.port = None if not cfg.control_port else ControlPort.open(
            cfg.control_host, cfg.control_port, self.sel, cfg, self.perform)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
        signal.signal(signal.SIGTERM, self._on_term)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # Move every object made so far (torch, the handler, the model) out of the
        # collector's reach: a worker's collections would otherwise write to each object's
        # header and copy-on-write-fault pages it never changes.
        gc.collect()
        gc.freeze()
        if "keys_manager.segment" in sys.modules:  # weights mapped from the node's T1
            sys.modules["keys_manager.segment"].share_page_tables()
        log.info("pod zygote pid %d: %d worker(s) (max %d), %d native thread(s)", self.pid,
                 self.target, self.cfg.max_workers, len(os.listdir("/proc/self/task")))
        while True:
            self._reap()
            if self.stopping and not self.workers:
                break
            self._reconcile()
            self._answer()
            if self.port is not None:
                self.port.expire(time.monotonic())
            for key, _ in self.sel.select(self._timeout()):
                key.data(key.fileobj)
        log.info("pod zygote pid %d: every worker stopped", self.pid)

    def _timeout(self) -> float | None:
        now = time.monotonic()
        due = [w.deadline for w in self.waiters]
        if self.port is not None and self.port.reading:
            due.append(self.port.due() or now)
        if self._active_count() < self.target:
            due.append(self.not_before)
        if self.stopping:  # past it, workers were sent SIGKILL: SIGCHLD wakes the loop
            due.append(max(self.stop_deadline, now + 0.05))
        retiring = [w for w in self.workers.values() if w.retiring]
        if retiring:  # a worker that never exits after its drain is killed
            due.append(now + 1.0)
        return max(0.0, min(due) - now) if due else None

    def _active(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.retiring]

    def _active_count(self) -> int:
        return sum(1 for w in self.workers.values() if not w.retiring)

    # -- workers -------------------------------------------------------------------------

    def _reconcile(self) -> None:
        if self.stopping:
            if time.monotonic() >= self.stop_deadline:
                for w in self.workers.values():
                    procs.kill(w.pid, signal.SIGKILL)
            return
        active = self._active()
        if len(active) < self.target and time.monotonic() >= self.not_before:
            for _ in range(self.target - len(active)):
                if time.monotonic() >= self.not_before:  # a failed fork backs off the rest
                    self._fork()
        elif len(active) > self.target:
            for w in self._victims(active, len(active) - self.target):
                self._retire(w)
        now = time.monotonic()
        for w in self.workers.values():  # past its drain: not waited for any longer
            if w.retiring and now > w.kill_at:
                procs.kill(w.pid, signal.SIGKILL)

    def _victims(self, active: list[Worker], k: int) -> list[Worker]:
        """Starting workers first, then idle ones, newest first; the relaying one last."""
        return sorted(active, key=lambda w: (w.pid == self.keep_pid, w.ready_at > 0,
                                             self.slots.inflight(w.slot) > 0, -w.forked))[:k]

    def _retire(self, w: Worker) -> None:
        w.retiring = True
        w.kill_at = time.monotonic() + self.cfg.drain_s + 5
        procs.kill(w.pid, signal.SIGTERM)

    def _fork(self) -> None:
        used = {w.slot for w in self.workers.values()}
        slot = next(i for i in range(self.slots.n) if i not in used)
        self.slots.reset(slot)
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as e:  # out of memory or of processes: try again later
            self.failures += 1
            self.not_before = time.monotonic() + min(10.0, 0.05 * 2 ** self.failures)
            log.error("pod zygote: fork failed (%s); next attempt in %.2fs", e,
                      self.not_before - time.monotonic())
            return
        if pid == 0:
            self._child(slot)
        self.workers[pid] = Worker(pid, slot, t0)

    def _child(self, slot: int) -> None:
        """Runs in the new worker; never returns."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(s, signal.SIG_DFL)
            procs.pdeathsig(signal.SIGKILL)  # kill -9 of the zygote takes every worker with it
            if os.getppid() != self.pid:  # it died before the line above
                os._exit(1)
            for conn in [*self.reading, *(w.conn for w in self.waiters)]:
                conn.close()
            if self.port is not None:
                self.port.close()
            self.sel.close()
            self.ctl.close()
            for fd in (self.events.r, self.wake_r, self.wake_w):
                os.close(fd)
            procs.reseed()
            self.work(self, slot)
        except BaseException:  # noqa: BLE001 - report, then leave without zygote code
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is None or w.retiring or self.stopping:
                continue
            self.metrics.restarts.inc()
            now = time.perf_counter()
            early = not w.ready_at or now - w.ready_at < 1.0
            self.failures = self.failures + 1 if early else 0
            delay = min(10.0, 0.05 * 2 ** self.failures) if early else 0.0
            self.not_before = time.monotonic() + delay
            log.warning("pod worker %d exited (%s)%s; replacing it%s", pid, procs.status(status),
                        " within a second of its start" if early else "",
                        f" in {delay:.2f}s" if delay else "")

    def _on_events(self, _fd: object) -> None:
        now = time.perf_counter()
        for pid, code in self.events.receive():
            w = self.workers.get(pid)
            if w is None:
                continue
            if code == READY and not w.ready_at:
                w.ready_at = now
                self.metrics.spawn.observe(now - w.forked)
            elif code == RETIRING:
                w.acked = True

    def _on_wake(self, _fd: object) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _on_term(self, *_: object) -> None:
        if self.stopping:
            return
        self.stopping, self.target = True, 0
        self.stop_deadline = time.monotonic() + self.cfg.drain_s + 5
        for w in self.workers.values():
            if not w.retiring:
                self._retire(w)

    # -- state and control -------------------------------------------------------------

    def state(self) -> dict[str, int]:
        live = self.workers.values()
        return {"workers": self.target,
                "ready": sum(1 for w in live if w.ready_at and not w.retiring),
                "busy": sum(1 for w in live if self.slots.inflight(w.slot) > 0),
                "pid": self.pid}

    def settled(self) -> bool:
        active = self._active()
        return len(active) == self.target and all(w.ready_at for w in active) and \
            all(w.acked for w in self.workers.values() if w.retiring)

    def _answer(self) -> None:
        if not self.waiters:
            return
        now, settled = time.monotonic(), self.settled()
        keep = []
        for w in self.waiters:
            if self.stopping:
                w.reply({"ok": False, "status": 503, "error": "the pod is stopping"})
            elif settled:
                w.reply({"ok": True, "state": self.state()})
            elif now >= w.deadline:
                w.reply({"ok": False, "status": 503, "state": self.state(),
                         "error": f"workers not ready after {self.cfg.spawn_timeout_s:g}s"
                                  " (see the pod's log)"})
            else:
                keep.append(w)
        self.waiters = keep

    def _accept(self, _sock: object) -> None:
        try:
            conn, _ = self.ctl.accept()
        except BlockingIOError:
            return
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  struct.calcsize("3i")))[0]
        if pid not in self.workers:
            conn.close()  # not one of ours: another container of the pod, say
            return
        conn.setblocking(False)
        self.reading[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ, self._read)

    def _read(self, conn: socket.socket) -> None:
        buf = self.reading[conn]
        try:
            chunk = conn.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if chunk and b"\n" not in buf and len(buf) < MAX_REQUEST:
            return
        self.sel.unregister(conn)
        del self.reading[conn]
        if not chunk and not buf.endswith(b"\n"):
            conn.close()
            return
        try:
            req = json.loads(bytes(buf).split(b"\n", 1)[0])
        except ValueError:
            req = None
        self._handle(conn, req if isinstance(req, dict) else {})

    def _handle(self, conn: socket.socket, req: dict) -> None:
        """A request a worker relayed (the watchdog's way in: control.handle)."""
        self.perform(req, conn, functools.partial(_reply, conn))

    def perform(self, req: dict, conn: socket.socket, reply: Callable[[dict], None]) -> None:
        """Answer ``req`` through ``reply``: now, or for a change once it is applied (the
        relayed way and the control port, port.py, alike)."""
        op = req.get("op")
        if op == "get":
            reply({"ok": True, "state": self.state()})
        elif op == "metrics":
            s = self.state()
            reply({"ok": True, "text": self.metrics.render(s["workers"], s["ready"],
                                                           s["busy"])})
        elif op == "set" and type(req.get("workers")) is int \
                and 1 <= req["workers"] <= self.cfg.max_workers and not self.stopping:
            if req["workers"] != self.target:
                log.info("pod workers %d -> %d", self.target, req["workers"])
            self.target, self.keep_pid = req["workers"], int(req.get("from") or 0)
            self.failures, self.not_before = 0, 0.0  # asked anew: no back-off
            self.waiters.append(Waiter(conn, time.monotonic() + self.cfg.spawn_timeout_s,
                                       reply))
        else:
            reply({"ok": False, "status": 503 if self.stopping else 400,
                   "error": "the pod is stopping" if self.stopping else
                   f"bad control request {str(req)[:200]}"})


def _reply(conn: socket.socket, doc: dict) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(2.0)
        conn.sendall(json.dumps(doc).encode() + b"\n")
    except OSError:
        pass
    finally:
        conn.close()
