"""Talking to the node's keys_manager, and the provider's launcher built on it.

``AgentLauncher`` is the local provider's default ``ReplicaLauncher``: every
replica is spawned by the agent (forked from a warm zygote).  It starts the
agent when none answers on the socket and supervises the agent it started as
a DaemonSet's kubelet would: when that process exits (crash, OOM kill,
``kill -9``) a new one is started after ``restart_delay_s``, which adopts the
zygotes and replicas still running (they are not the agent's threads and go
on serving) and, at shutdown, frees the node's shared memory.  Without it a
dead agent stayed dead until the next scale-up, and a provider stopped
meanwhile left the zygotes and the T1 segments in /dev/shm behind.

The agent it starts is owned by this provider (``QUART_KEYS_OWNER_PID``, keys_manager/owner.py)
and stops everything when its provider is gone for good.  A provider restarted after a crash
(local_provider/supervisor.py) finds that agent orphaned on the socket, adopts it, supervises
it as its own and takes over its replicas (``adoptable``, local_provider/adopt.py), so the
replica count stays what it was; an agent nobody owns (run by hand) is still left alone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keys_manager.config import AgentConfig
from keys_manager.procs import alive, start_time, terminate

log = logging.getLogger("keys_manager.client")


class AgentError(RuntimeError):
    def __init__(self, message: str, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind


def call(sock: Path | str, doc: dict[str, Any], timeout_s: float = 30.0,
         meanwhile: Callable[[], None] | None = None) -> dict[str, Any]:
    """One request on the agent's socket; AgentError when it fails or answers ok=false.
    ``meanwhile`` runs once the request is sent, while the agent works on it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(str(sock))
    except OSError as e:  # nothing was sent: safe to start the agent and try again
        s.close()
        raise AgentError(f"keys_manager at {sock}: {e}") from e
    try:
        with s:
            s.sendall(json.dumps(doc).encode() + b"\n")
            if meanwhile is not None:
                try:
                    meanwhile()
                except Exception:  # noqa: BLE001 - the answer may be a replica: read it
                    log.exception("while keys_manager worked on %s", doc.get("op"))
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:  # sent, maybe acted upon: not retried blindly
        raise AgentError(f"keys_manager at {sock}: {e}", "broken") from e
    try:
        ans: dict[str, Any] = json.loads(buf.decode() or "{}")
    except ValueError as e:
        raise AgentError(f"keys_manager at {sock}: unreadable answer: {e}", "broken") from e
    if not ans.get("ok"):
        raise AgentError(f"keys_manager: {ans.get('error', 'no answer')}", ans.get("kind", ""))
    return ans


class ForkedHandle:
    """A replica the agent made: not our child, so liveness is read from /proc."""

    def __init__(self, launcher: AgentLauncher, doc: dict[str, Any]) -> None:
        self.launcher = launcher
        self.pid = int(doc["pid"])
        self.url = str(doc["url"])
        self._started = doc.get("started") or start_time(self.pid)
        self.info = {k: doc.get(k) for k in ("tier", "spawn_ms", "zygote_pid", "stage", "log",
                                             "pooled", "function", "index")}

    def alive(self) -> bool:
        return alive(self.pid, self._started)

    def terminate(self, grace_s: float) -> None:
        try:
            call(self.launcher.socket, {"op": "kill", "pid": self.pid, "grace_s": grace_s},
                 timeout_s=grace_s + 15)
        except AgentError as e:  # the agent is down: stop it ourselves, it reaps on restart
            log.warning("kill of pid %d through keys_manager failed (%s): signalling it", self.pid,
                        e)
        terminate(self.pid, self._started, grace_s)


class AgentLauncher:
    """``launch(spec)`` -> a replica spawned by the node's keys_manager (started on demand)."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None,
                 python: str = sys.executable, start_timeout_s: float = 30.0,
                 restart_on_exit: bool = True, restart_delay_s: float = 1.0) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("QUART_STATE_DIR", str(self.state_dir))
        self.socket = Path(self.env.get("QUART_KEYS_SOCKET") or
                           self.state_dir / "keys_manager.sock").absolute()
        self.env["QUART_KEYS_SOCKET"] = str(self.socket)
        self.python = python
        self.start_timeout_s = start_timeout_s
        # False for an agent whose death is meant to last (a simulated node failure)
        self.restart_on_exit, self.restart_delay_s = restart_on_exit, restart_delay_s
        # how replicas are made: "fork" from the warm zygote (production), or "process"
        # (a fresh interpreter, weights from tier ``weights``: the baselines of
        # benchmark.studies.scaleup)
        self.mode, self.weights = "fork", "T1"
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted: tuple[int, int | None] | None = None  # an orphan we took over
        self._lock = threading.RLock()

    def ensure_agent(self) -> int:
        """The agent's pid: the one answering (adopted if its provider died), or one we
        start now."""
        try:
            return self._answering(call(self.socket, {"op": "ping"}, timeout_s=5))
        except AgentError:
            pass
        with self._lock:
            try:
                return self._answering(call(self.socket, {"op": "ping"}, timeout_s=5))
            except AgentError:
                return self._start()

    def _answering(self, ping: dict[str, Any]) -> int:
        pid = int(ping["pid"])
        if ping.get("orphaned"):
            call(self.socket, {"op": "adopt", "owner": os.getpid()}, timeout_s=5)
            with self._lock:
                self._adopted = (pid, start_time(pid))
            log.warning("adopted keys_manager pid %d: the provider that started it is gone",
                        pid)
            if self.restart_on_exit:
                threading.Thread(target=self._watch_adopted, args=(self._adopted,),
                                 daemon=True, name=f"keys-manager-{pid}").start()
        return pid

    def _watch_adopted(self, agent: tuple[int, int | None]) -> None:
        """An adopted agent is not our child: poll /proc, then restart it as ``_supervise``."""
        while alive(*agent):
            time.sleep(0.5)
        with self._lock:
            if self._adopted != agent:
                return  # closed
            self._adopted = None
        log.warning("adopted keys_manager (pid %d) exited: starting a new one", agent[0])
        try:
            self.ensure_agent()
        except AgentError as e:  # the next launch tries again
            log.error("keys_manager restart failed: %s", e)

    def adoptable(self) -> list[ForkedHandle]:
        """The live replicas of this node's agent: after a crash, those a previous provider
        of this state dir started.  Adopts an orphaned agent, or starts one when its
        state.json lists a live replica (a new agent adopts those); an agent with a live
        owner, or none (run by hand), serves someone else: nothing of it is ours."""
        try:
            ping = call(self.socket, {"op": "ping"}, timeout_s=5)
        except AgentError:
            if not self._listed_alive():
                return []
            self.ensure_agent()
        else:
            if not ping.get("orphaned"):
                return []
            self._answering(ping)
        reps = self.status().get("replicas", [])
        return [ForkedHandle(self, d) for d in reps if d.get("alive")]

    def _start(self) -> int:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # ours, but not answering: replace it
            self._proc.wait()
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "keys_manager.log", "ab") as out:
            proc = self._proc = subprocess.Popen(
                [self.python, "-m", "keys_manager"],
                env={**self.env, "QUART_KEYS_OWNER_PID": str(os.getpid())},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AgentError(f"keys_manager exited with {proc.returncode}; see "
                                 f"{logs / 'keys_manager.log'}")
            try:
                pid = int(call(self.socket, {"op": "ping"}, timeout_s=2)["pid"])
                log.info("keys_manager started (pid %d, socket %s)", pid, self.socket)
                if self.restart_on_exit:
                    threading.Thread(target=self._supervise, args=(proc,), daemon=True,
                                     name=f"keys-manager-{pid}").start()
                return pid
            except AgentError:
                time.sleep(0.05)
        proc.kill()
        raise AgentError(f"keys_manager not answering on {self.socket} after "
                         f"{self.start_timeout_s:g}s")

    def _supervise(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for the agent we started to exit; start a new one unless it was meant to go
        (``close``, a replacement, a simulated node failure: ``_proc`` no longer names it)."""
        code = proc.wait()
        time.sleep(self.restart_delay_s)
        expected = proc
        while True:
            with self._lock:
                if self._proc is None or self._proc is not expected:
                    return
            log.warning("keys_manager (pid %d) exited with %s: starting a new one", proc.pid,
                        code)
            try:
                self.ensure_agent()  # the new agent's own supervisor takes over from here
                return
            except AgentError as e:
                with self._lock:
                    expected = self._proc  # the attempt that failed, unless closed meanwhile
                log.error("keys_manager restart failed (%s); retrying in 5s", e)
                time.sleep(5)

    def _listed_alive(self) -> bool:
        try:
            state = AgentConfig.from_env(self.env).keys_dir / "state.json"
            doc = json.loads(state.read_text())
            return any(alive(int(d["pid"]), d.get("started")) for d in doc.get("replicas", []))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def launch(self, spec: Any) -> ForkedHandle:
        doc = self._spawn_doc(spec)
        try:
            ans = call(self.socket, doc, timeout_s=600)
        except AgentError as e:
            if e.kind != "unavailable":
                raise  # the agent answered: a real refusal (bad request, cache full...)
            self.ensure_agent()  # not running (first launch, or it died): start it, retry once
            ans = call(self.socket, doc, timeout_s=600)
        return ForkedHandle(self, ans["replica"])

    def take_pooled(self, spec: Any,
                    meanwhile: Callable[[], None] | None = None) -> ForkedHandle | None:
        """A replica at once if the agent has an idle pooled worker for it, else None (no
        worker ready, no agent running, any refusal): the caller then ``launch``es it,
        where a fork, a cold start or the error is handled; this never waits for one.
        ``meanwhile`` (which must not raise) runs while the agent hands the worker over,
        unless no request could be sent."""
        if self.mode != "fork":
            return None
        try:
            ans = call(self.socket, self._spawn_doc(spec, pooled_only=True), timeout_s=10,
                       meanwhile=meanwhile)
        except AgentError as e:
            log.debug("no pooled hand-over for %s: %s", spec.function, e)
            return None
        rep = ans.get("replica")
        return ForkedHandle(self, rep) if isinstance(rep, dict) else None

    def _spawn_doc(self, spec: Any, pooled_only: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"op": "spawn", "replica": {
            "function": spec.function, "index": spec.index,
            "handler_dir": str(Path(spec.handler_dir).absolute()),
            "template_dir": str(Path(spec.template_dir).absolute()),
            "workdir": str(Path(spec.workdir).absolute()), "env": dict(spec.env),
            "log_path": str(Path(spec.log_path).absolute()), "max_inflight": spec.max_inflight},
            "mode": self.mode, "weights": self.weights}
        if pooled_only:
            doc["pooled_only"] = True
        return doc

    def set_pool(self, function: str, size: int) -> None:
        """Keep ``size`` idle workers of ``function`` pre-forked on this node."""
        call(self.socket, {"op": "pool", "function": function, "size": size})

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = call(self.socket, {"op": "status"})["status"]
        return status

    def close(self) -> None:
        """Stop the agent if we started or adopted it (one someone else runs is left alone)."""
        with self._lock:  # after a start in progress (e.g. the supervisor's): stop that one
            proc, self._proc = self._proc, None
            adopted, self._adopted = self._adopted, None
        if adopted is not None and alive(*adopted):
            try:
                call(self.socket, {"op": "shutdown"}, timeout_s=5)
            except AgentError:
                pass
            terminate(adopted[0], adopted[1], 30.0)
        if proc is None or proc.poll() is not None:
            return
        try:
            call(self.socket, {"op": "shutdown"}, timeout_s=5)
            proc.wait(timeout=30)
        except (AgentError, subprocess.TimeoutExpired):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
