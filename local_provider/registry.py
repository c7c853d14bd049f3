"""The function store and the reconcile loop that keeps running replicas == desired.

Like a Kubernetes Deployment controller, but for local processes: the REST
handlers only change the desired state (deployment, replica count); one loop
compares it with the replicas that exist and starts, drains or replaces them.
An update that changes how replicas run (handler, template, env, ...) bumps a
generation and rolls: old replicas keep serving until new ones are ready.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from local_provider.bringup import BringUp, Once
from local_provider.config import ProviderConfig
from local_provider.cpulimit import CpuLimiter, wanted_quotas
from local_provider.images import ImageResolver, ImageSource
from local_provider.logs import LogStore
from local_provider.outliers import stall_limit
from local_provider.records import (
    FunctionExists,
    FunctionNotFound,
    FunctionRecord,
    launch_key,
    stop_order,
    tell,
    victims,
)
from local_provider.replicas import ReplicaLauncher
from local_provider.router import FunctionPool, Replica
from local_provider.secret_store import SecretStore
from local_provider.types import FunctionDeployment, FunctionStatus, ValidationError
from local_provider.workers import Workers

log = logging.getLogger("local_provider.registry")


class Registry(BringUp):
    """In-memory function store; every read and write goes through ``self.lock``."""

    def __init__(self, config: ProviderConfig, launcher: ReplicaLauncher,
                 replica_env: dict[str, str] | None = None,
                 limiter: CpuLimiter | None = None, images: ImageResolver | None = None,
                 secrets: SecretStore | None = None, logs: LogStore | None = None) -> None:
        self.config = config
        self.launcher = launcher
        self.limiter = limiter
        self.images = images or ImageResolver(config.state_dir, config.build_dir,
                                              config.template_dir)
        self.secrets = secrets or SecretStore(config.state_dir)
        self.logs = logs or LogStore(config.log_lines)
        # Defaults for every replica's environment (e.g. QUART_GATEWAY_URL); envVars win.
        self.replica_env = dict(replica_env or {})
        self.lock = threading.RLock()
        self._functions: dict[str, FunctionRecord] = {}
        self._stopping = threading.Event()
        self._loop: threading.Thread | None = None
        self._workers = Workers()
        self._after: list[Callable[[], None]] = []  # for replicas handed over (kick)

    # -- desired state (REST handlers) -----------------------------------------

    def admit(self, dep: FunctionDeployment) -> ImageSource:
        """Where the replicas come from; ValidationError (400) when the image resolves
        nowhere or a listed secret does not exist (faas-netes refuses those too)."""
        source = self.images.resolve(dep.service, dep.image, dep.annotations)
        missing = self.secrets.missing(dep.secrets)
        if missing:
            raise ValidationError("secrets", f"not found: {missing}; create them first "
                                  "(faas-cli secret create NAME)")
        return source

    def deploy(self, dep: FunctionDeployment) -> FunctionRecord:
        source = self.admit(dep)
        with self.lock:
            if dep.service in self._functions:
                raise FunctionExists(dep.service)
            rec = FunctionRecord(dep, source, dep.min_replicas,
                                 FunctionPool(dep.service, dep.max_inflight,
                                              self.config.queue_size))
            self._functions[dep.service] = rec
        log.info("deploy %s: %d replica(s), handler %s (%s)", dep.service, rec.desired,
                 source.handler_dir, source.origin)
        self.kick()
        return rec

    def update(self, dep: FunctionDeployment) -> FunctionRecord:
        source = self.admit(dep)  # a request we refuse is 400 whether or not it exists
        with self.lock:
            rec = self._functions.get(dep.service)
            if rec is None:
                raise FunctionNotFound(dep.service)
            rolled = launch_key(dep, source) != launch_key(rec.deployment, rec.source)
            rec.deployment, rec.source = dep, source
            rec.desired = max(rec.desired, dep.min_replicas) if dep.min_replicas else rec.desired
            if rolled:
                rec.generation += 1
                rec.failures, rec.not_before = 0, 0.0
            rec.pool.set_max_inflight(dep.max_inflight)
        log.info("update %s: %s", dep.service,
                 f"rolling replicas to generation {rec.generation}" if rolled
                 else "metadata only, replicas kept")
        self.kick()
        return rec

    def delete(self, name: str) -> None:
        with self.lock:
            rec = self._functions.pop(name, None)
            if rec is None:
                raise FunctionNotFound(name)
        rec.pool.close()
        for r in list(rec.pool.replicas):
            self._drain(rec, r)
        self.logs.forget(name)
        self.secrets.unmount(name)
        log.info("delete %s: stopping %d replica(s)", name, len(rec.pool.replicas))

    def scale(self, name: str, replicas: int) -> None:
        with self.lock:
            rec = self._functions.get(name)
            if rec is None:
                raise FunctionNotFound(name)
            old, rec.desired = rec.desired, replicas
        self.kick(rec if replicas > old else None)
        log.info("scale %s: %d -> %d replica(s)", name, old, replicas)

    def scale_from_zero(self, rec: FunctionRecord) -> None:
        """A call found ``rec`` at zero replicas: ask for its minimum (label
        com.openfaas.scale.min, at least 1), as the upstream gateway does with
        ``scale_from_zero``; the call then waits in the queue for the first ready replica,
        within its timeout, instead of timing out there."""
        with self.lock:
            if rec.desired > 0 or self._functions.get(rec.name) is not rec:
                return
            rec.desired = max(1, rec.deployment.min_replicas)
        self.kick(rec)
        log.info("scale %s: 0 -> %d replica(s): a call arrived (scale from zero)", rec.name,
                 rec.desired)

    # -- reads -------------------------------------------------------------------

    def get(self, name: str) -> FunctionRecord:
        with self.lock:
            rec = self._functions.get(name)
        if rec is None:
            raise FunctionNotFound(name)
        return rec

    def exists(self, name: str) -> bool:
        with self.lock:
            return name in self._functions

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self._functions)

    def status(self, name: str) -> FunctionStatus:
        rec = self.get(name)
        with self.lock:
            return FunctionStatus.of(rec.deployment, rec.invocation_count, rec.desired,
                                  rec.pool.ready_count(), rec.created_at)

    def statuses(self) -> list[FunctionStatus]:
        out = []
        for name in self.names():
            with contextlib.suppress(FunctionNotFound):  # deleted since names() was read
                out.append(self.status(name))
        return out

    def count_invocation(self, rec: FunctionRecord) -> None:
        with self.lock:
            rec.invocation_count += 1

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-function load figures for the gateway's metrics."""
        with self.lock:
            recs = list(self._functions.values())
        return {rec.name: {**rec.pool.snapshot(), "replicas": rec.desired,
                           "invocationCount": rec.invocation_count} for rec in recs}

    # -- reconcile -----------------------------------------------------------------

    def start(self) -> None:
        self._loop = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self._loop.start()
        self.logs.start()

    def kick(self, rec: FunctionRecord | None = None) -> None:
        """Reconcile now instead of at the next tick (deploy and scale feel instant).  ``rec``
        wants more replicas: the launcher's idle pooled workers become them first, on this
        thread, ready before the caller answers (bringup.py), and the desired state is saved
        while keys_manager hands the first one over.  If that was all ``rec`` lacked,
        nothing is left to make instant: what they still need (an unlimited cgroup, log
        lines) waits for the loop's next tick, not to take CPU from their first calls."""
        changed = Once(self.changed)
        ready, covered = self._take_pooled(rec, changed) if rec is not None else ([], False)
        with self.lock:
            self._after += ready
        try:
            changed.done()  # saved before reconcile acts (and before the caller answers)
        finally:
            if not covered:
                self._spawn(self.reconcile_once, "reconcile-kick")

    def changed(self) -> None:
        """The desired state changed (``kick``): a hook for a registry that keeps it."""

    def _run(self) -> None:
        while not self._stopping.wait(self.config.reconcile_period_s):
            try:
                self.reconcile_once()
            except Exception:  # the loop must outlive any one bad tick
                log.exception("reconcile tick failed")

    def reconcile_once(self) -> None:
        with self.lock:
            recs = list(self._functions.values())
        for rec in recs:
            self._reconcile(rec)
        if self.limiter is not None and not self._stopping.is_set():
            self.limiter.sync(lambda: wanted_quotas(recs))
        with self.lock:
            after, self._after = self._after, []
        for fn in after:
            try:
                fn()
            except Exception:  # noqa: BLE001 - one replica's bookkeeping, not the loop's
                log.exception("after a pooled hand-over")

    def _reconcile(self, rec: FunctionRecord) -> None:
        pool = rec.pool
        with self.lock, pool.cond:
            if self._stopping.is_set() or self._functions.get(rec.name) is not rec:
                return
            for r in list(pool.replicas):  # a draining replica is meant to exit: not a death
                if r.handle is not None and not r.dead and not r.draining and \
                        not r.handle.alive():
                    self._died(rec, r)
            live = [r for r in pool.replicas if not r.draining and not r.dead]
            slow = stall_limit(pool.gaps, self.config)  # stalled this long: stopped first
            current = [r for r in live if r.generation == rec.generation]
            old = [r for r in live if r.generation != rec.generation]
            missing = rec.desired - len(current)
            if missing > 0 and time.monotonic() >= rec.not_before:
                for _ in range(missing):
                    self._start(rec)
            elif missing < 0:
                pick = getattr(self.launcher, "victims", None)
                for r in victims(rec.name, current, -missing, pick, slow):
                    self._drain(rec, r)
            keep_old = max(0, rec.desired - sum(1 for r in current if r.ready))
            for r in stop_order(old, None, slow)[:max(0, len(old) - keep_old)]:
                self._drain(rec, r)

    def _died(self, rec: FunctionRecord, r: Replica) -> None:
        if rec.pool.set_dead(r):
            code = getattr(r.handle, "returncode", lambda: None)()
            log.warning("replica %s%s (pid %s) died (exit %s, %d call(s) in flight); replacing it",
                        rec.name, r.name, r.handle.pid if r.handle else "-", code, r.inflight)
        rec.pool.remove(r)

    def mark_dead(self, name: str, r: Replica, refused: bool = False, hung: str = "") -> bool:
        """The proxy saw a call to ``r`` fail: if its process has exited, or its port refused
        a connection (its listening socket is closed, so it will never serve again, even
        while the process still looks alive: a killed process closes its sockets last, after
        freeing its memory), stop routing there now, stop what is left of it, and let
        reconcile replace it before the next tick.  ``hung`` (why: outliers.py): the same
        for a live replica that stopped answering, killed at once.  True if it acted."""
        try:
            rec = self.get(name)
        except FunctionNotFound:
            return False
        handle = r.handle
        with self.lock, rec.pool.cond:
            if handle is None or r.dead or r.draining:
                return False  # already handled, or being stopped by a drain
            lingering = handle.alive()
            if lingering and not refused and not hung:
                return False
            if lingering:
                rec.pool.set_dead(r)
                log.warning("replica %s%s (pid %d) %s: replacing it, %d call(s) in flight", name,
                            r.name, handle.pid, f"is hung ({hung})" if hung else "refuses "
                            "connections (it died, is dying or is broken)", r.inflight)
            else:
                self._died(rec, r)
        if lingering:
            def stop() -> None:  # calls on its open connections may still finish, as in a drain
                if not hung:
                    rec.pool.wait_idle(r, self.config.drain_timeout_s)
                handle.terminate(self.config.eject_grace_s if hung else self.config.stop_grace_s)
                rec.pool.remove(r)

            self._spawn(stop, f"stop-{name}-{r.index}")
        return True

    def _drain(self, rec: FunctionRecord, r: Replica) -> None:
        """Stop routing to ``r``, wait for its in-flight calls (bounded), then stop it."""
        pool = rec.pool
        with pool.cond:
            if r.draining:
                return
            pool.set_draining(r)
            handle = r.handle
        if handle is None:
            return  # still launching: _bring_up sees ``draining`` and stops it
        tell(handle, "on_draining")

        def run() -> None:
            if r.ready and not pool.wait_idle(r, self.config.drain_timeout_s):
                log.warning("replica %s%s still had %d call(s) in flight after %.1fs drain",
                            rec.name, r.name, r.inflight, self.config.drain_timeout_s)
            handle.terminate(self.config.stop_grace_s)
            pool.remove(r)
            log.info("replica %s%s stopped (pid %d, served %d)", rec.name, r.name,
                     handle.pid, r.served)

        self._spawn(run, f"drain-{rec.name}-{r.index}")

    def _spawn(self, fn: Callable[[], object], name: str) -> None:
        self._workers.spawn(fn, name)

    # -- shutdown ------------------------------------------------------------------

    def stop_all(self, timeout_s: float | None = None) -> None:
        """Stop the loop and every replica (SIGTERM, SIGKILL after the grace period)."""
        self._stopping.set()
        self.logs.stop()
        if self._loop is not None:
            self._loop.join(timeout=5)
        with self.lock:
            recs = list(self._functions.values())
        handles = []
        for rec in recs:
            rec.pool.close()
            with rec.pool.cond:
                handles += [r.handle for r in rec.pool.replicas if r.handle is not None]
        stoppers = [threading.Thread(target=h.terminate, args=(self.config.stop_grace_s,))
                    for h in handles]
        for t in stoppers:
            t.start()
        deadline = time.monotonic() + (timeout_s or self.config.stop_grace_s + 5)
        for t in stoppers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._workers.join(deadline)  # launches in progress terminate what they started
        log.info("stopped %d replica(s)", len(handles))
