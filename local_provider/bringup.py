"""How a replica the reconcile loop asked for becomes one the router sends calls to.

Two ways in.  A launch (``_bring_up``, on a worker thread): the launcher forks or starts a
process, the provider waits for its health probe.  A hand-over (``_take_pooled``, inline,
on the thread that raised the replica count): the launcher has an idle worker that is
already warm (keys_manager's pool, keys_manager/pool.py), so it takes one round trip, and the
replica is ready before the scale call answers.  Why inline: the reconcile kick and the
launch were one thread each, and on a node of two busy cores each hop cost a millisecond or
more of the 5 ms a pooled replica may take (issue 17).  Anything that may be slow (a fork, a
cold start, waiting for health) stays on a worker thread.

Both end in ``_serving``; what a ready replica still needs and nobody waits for (an
unlimited replica's cgroup, whose move takes 5-15 ms on cgroup v1; log lines) runs after
it (``_after_ready``): on the launch's thread, or for a hand-over on the reconcile loop's
next tick (registry.py ``kick``), away from the scale call and the replica's first calls.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from local_provider.config import ProviderConfig
from local_provider.cpulimit import CpuLimiter, cpus_of
from local_provider.logs import LogStore, note
from local_provider.records import FunctionRecord, backoff_s, tell
from local_provider.replicas import (
    ReplicaHandle,
    ReplicaLauncher,
    ReplicaSpec,
    env_for,
    wait_healthy,
)
from local_provider.router import Replica
from local_provider.secret_store import SecretStore

log = logging.getLogger("local_provider.registry")


class Once:
    """``fn`` run at most once, its error kept for ``done``: what a launcher runs while
    keys_manager works (``take_pooled``'s ``meanwhile``) must not raise."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn, self.ran = fn, False
        self.error: Exception | None = None

    def __call__(self) -> None:
        if not self.ran:
            self.ran = True
            try:
                self.fn()
            except Exception as e:  # noqa: BLE001 - raised by done(), after the hand-over
                self.error = e

    def done(self) -> None:
        """Run it now unless it ran; raise its error."""
        self()
        if self.error is not None:
            raise self.error


class BringUp:
    """The part of ``Registry`` (registry.py) that starts replicas."""

    config: ProviderConfig
    launcher: ReplicaLauncher
    limiter: CpuLimiter | None
    secrets: SecretStore
    logs: LogStore
    replica_env: dict[str, str]
    lock: threading.RLock
    _stopping: threading.Event
    _functions: dict[str, FunctionRecord]

    def _spawn(self, fn: Callable[[], object], name: str) -> None:
        raise NotImplementedError

    def _start(self, rec: FunctionRecord) -> None:
        """One more replica of ``rec``, launched on a worker thread; the caller holds
        ``self.lock`` and ``rec.pool.cond``."""
        r, spec = self._reserve(rec)
        self._spawn(lambda: self._bring_up(rec, r, spec), f"start-{rec.name}-{r.index}")

    def _reserve(self, rec: FunctionRecord) -> tuple[Replica, ReplicaSpec]:
        """A new replica slot in ``rec``'s pool (counted by reconcile from now on, routed to
        once ready) and what to launch it from; under ``self.lock`` and ``rec.pool.cond``."""
        used = {r.index for r in rec.pool.replicas if not r.dead}
        index = next(i for i in range(len(used) + 1) if i not in used)
        r = Replica(index=index, generation=rec.generation)
        rec.pool.add(r)
        dep, src, instance = rec.deployment, rec.source, f"{rec.name}-{index}"
        own = {"HOSTNAME": instance,
               "QUART_SECRETS_DIR": str(self.secrets.mount(rec.name, dep.secrets))}
        spec = ReplicaSpec(
            function=rec.name, index=index, handler_dir=src.handler_dir,
            template_dir=src.template_dir, workdir=src.workdir,
            env=env_for(dep.env_vars, {**self.replica_env, **own}),
            log_path=self.config.log_dir / f"{instance}.log",
            max_inflight=dep.max_inflight, labels=dict(dep.labels),
            annotations=dict(dep.annotations), constraints=tuple(dep.constraints))
        self.logs.watch(rec.name, instance, spec.log_path)
        return r, spec

    def _take_pooled(self, rec: FunctionRecord, meanwhile: Once
                     ) -> tuple[list[Callable[[], None]], bool]:
        """Hand the launcher's idle pooled workers over as the replicas ``rec`` lacks, on this
        thread (see the module's doc); the first one it has not got is launched on a worker
        thread.  ``meanwhile`` runs during the first hand-over (keys_manager's part of it).
        Returns what the replicas handed over still need (``_after_ready``, for the caller
        to run later), and whether they were all ``rec`` lacked."""
        take: Callable[..., ReplicaHandle | None] | None = \
            getattr(self.launcher, "take_pooled", None)
        after: list[Callable[[], None]] = []
        if take is None:
            return after, False
        while (slot := self._pooled_slot(rec)) is not None:
            done = self._hand_over(rec, *slot, lambda spec: take(spec, meanwhile))
            if done is None:
                return after, False
            after.append(done)
        return after, True

    def _pooled_slot(self, rec: FunctionRecord) -> tuple[Replica, ReplicaSpec] | None:
        """A slot for one more replica, if reconcile would start one now (None: enough)."""
        with self.lock, rec.pool.cond:
            if self._stopping.is_set() or self._functions.get(rec.name) is not rec or \
                    time.monotonic() < rec.not_before:
                return None
            current = sum(1 for r in rec.pool.replicas if not r.draining and not r.dead
                          and r.generation == rec.generation)
            return self._reserve(rec) if current < rec.desired else None

    def _hand_over(self, rec: FunctionRecord, r: Replica, spec: ReplicaSpec,
                   take: Callable[[ReplicaSpec], ReplicaHandle | None]
                   ) -> Callable[[], None] | None:
        """A pooled worker becomes replica ``r``: then what it still needs, else None (``r``
        is launched, or given up, on a worker thread)."""
        t0 = time.monotonic()
        try:
            handle = take(spec)
        except Exception as e:  # noqa: BLE001 - launched the usual way instead
            log.warning("pooled hand-over for %s failed: %s", rec.name, e)
            handle = None
        if handle is None:
            self._spawn(lambda: self._bring_up(rec, r, spec), f"start-{rec.name}-{r.index}")
            return None
        if not self._serving(rec, r, spec, handle, t0):
            return None
        return lambda: self._after_ready(rec, r, spec, handle)

    def _bring_up(self, rec: FunctionRecord, r: Replica, spec: ReplicaSpec) -> None:
        t0 = time.monotonic()
        try:
            handle = self.launcher.launch(spec)
        except Exception as e:  # noqa: BLE001 - any launcher failure means "retry later"
            log.error("replica %s%s could not be launched: %s", rec.name, r.name, e)
            rec.pool.set_dead(r)
            rec.pool.remove(r)
            self._backoff(rec)
            return
        if self._serving(rec, r, spec, handle, t0):
            self._after_ready(rec, r, spec, handle)

    def _serving(self, rec: FunctionRecord, r: Replica, spec: ReplicaSpec,
                 handle: ReplicaHandle, t0: float) -> bool:
        """``handle`` is replica ``r``: wait until it is healthy (a pooled one is), then route
        to it.  False when it is not (stopped, with a back-off) or no longer wanted."""
        pool = rec.pool
        with pool.cond:
            r.handle = handle
            abort = r.draining or self._stopping.is_set()
        if abort:  # drained while it launched: the drain left the handle to us
            def give_up() -> None:
                handle.terminate(self.config.stop_grace_s)
                pool.remove(r)

            self._spawn(give_up, f"stop-{rec.name}-{r.index}")
            return False
        cpus = cpus_of(rec.deployment.limits)  # a limit bites before it serves (an unlimited
        if self.limiter is not None and cpus is not None:  # cgroup waits: 10-20 ms on v1)
            self.limiter.place(rec.name, r.index, handle.pid, cpus)
        stop = lambda: r.draining or r.dead or self._stopping.is_set()  # noqa: E731
        ok = handle.info.get("pooled") is True or wait_healthy(  # pooled: warm, probed already
            handle, self.config.start_timeout_s, stop)
        if ok and handle.alive():
            handle.info["ready_ms"] = round((time.monotonic() - t0) * 1e3, 3)
            pool.set_ready(r)
            tell(handle, "on_ready")
            with self.lock:
                rec.failures, rec.not_before = 0, 0.0
            return True
        if r.draining or self._stopping.is_set():
            return False  # the drain (or shutdown) owns the handle now
        why = ("exited" if not handle.alive()
               else f"not healthy after {self.config.start_timeout_s:g}s")
        log.error("replica %s%s (pid %d) %s during start; see %s", rec.name, r.name, handle.pid,
                  why, spec.log_path)
        pool.set_dead(r)
        handle.terminate(self.config.stop_grace_s)
        pool.remove(r)
        self._backoff(rec)
        return False

    def _after_ready(self, rec: FunctionRecord, r: Replica, spec: ReplicaSpec,
                     handle: ReplicaHandle) -> None:
        """What a replica that serves still needs, off the path to serving it."""
        took = float(handle.info.get("ready_ms") or 0.0) / 1e3  # to ready, not to here
        tier = handle.info.get("tier", "process")
        if self.limiter is not None and cpus_of(rec.deployment.limits) is None and \
                not (r.draining or r.dead):
            self.limiter.place(rec.name, r.index, handle.pid, None)
        log.info("replica %s%s ready in %.2fs (pid %d, %s, %s)", rec.name, r.name, took,
                 handle.pid, handle.url, tier)
        note(spec.log_path, f"{spec.function}-{spec.index} ready in {took:.3f}s "
                            f"(pid {handle.pid}, {tier})")

    def _backoff(self, rec: FunctionRecord) -> None:
        with self.lock:
            rec.failures += 1
            delay = backoff_s(rec.failures)
            rec.not_before = time.monotonic() + delay
        log.warning("%s: %d failed start(s) in a row; next attempt in %.1fs", rec.name,
                    rec.failures, delay)
