"""The node agent: one parameter cache, one warm zygote per function, every replica of the node.

``spawn`` is the provider's way to make a replica.  A model stage's weights
are made resident in T1 first (``ParamCache.ensure``: a stat when they
already are), then the replica is fork()ed from the function's zygote, which
is started (paying the imports once) when missing, dead, configured
differently, or mapping a segment that has since been rebuilt.  Running
replicas pin their stage in T1; a stage evicted to make room takes its
zygote with it (the zygote's mapping would otherwise keep the memory).

Everything needed to carry on after a crash is in ``state.json``: a
restarted agent adopts the zygotes and replicas that are still alive (their
pid and start time), re-pins their stages and deletes what it cannot vouch
for, so nothing leaks in ``/dev/shm``.  A zygote that dies (crash, OOM kill,
``kill -9``) while its function still runs replicas is warmed again from the
request it was started with (kept in ``state.json`` too): otherwise the next
scale-up, in the middle of the burst that asked for it, would pay the cold
start the zygote exists to avoid.

Every zygote and replica gets ``QUART_NODE_DIR`` (this agent's keys directory):
where replicas of the node keep what they share, e.g. the emulated
accelerators' device locks (``functions/stage/device.py``).  A weightless stage
(``"file": null`` in its manifest, an emulated one) has nothing to cache.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keys_manager import state_file
from keys_manager.cache import Entry, ParamCache, StageKey
from keys_manager.config import AgentConfig
from keys_manager.launch import fork_replica, start_process
from keys_manager.pool import Pooled, WarmPool, hand_over, prefork
from keys_manager.procs import Proc
from keys_manager.request import ReplicaRequest
from keys_manager.zygotes import Zygotes

log = logging.getLogger("keys_manager.agent")
MODES = ("fork", "process")
WEIGHT_TIERS = ("T1", "T2", "T3")


class KeysManager(Zygotes):
    """Thread-safe; one lock per function so a cold zygote start does not stall the others."""

    def __init__(self, cfg: AgentConfig,
                 on_spawn: Callable[[str, float], None] | None = None) -> None:
        self.cfg = cfg
        self.zygote_dir = cfg.keys_dir / "zygotes"
        for d in (cfg.keys_dir, self.zygote_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_file = cfg.keys_dir / "state.json"
        self.cache = ParamCache(cfg.disk_dir, cfg.shm_dir, cfg.memory_threshold_bytes)
        self.zygotes: dict[str, Proc] = {}
        self.replicas: dict[int, Proc] = {}
        self.lock = threading.RLock()
        self._flocks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self.on_spawn = on_spawn or (lambda tier, seconds: None)
        self.recycled = 0
        self._recipes: dict[str, dict[str, Any]] = {}  # function -> its zygote's request
        self._rewarmed: dict[str, float] = {}
        self._rewarming: set[str] = set()
        self._recycling: Counter[str] = Counter()  # functions _recycle is stopping
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._dirty = False  # state.json is behind (a spawn with defer_save)
        self._spawned: list[tuple[str, Proc]] = []  # not yet logged (flush)
        self.pool = WarmPool(cfg.pool_size, self._prefork)
        # shutdown() stops the replicas too: `quart-faas down`, or no provider adopted us
        self.stop_replicas_at_shutdown = False
        self._restore()

    # ------------------------------------------------------------------ API

    def ensure(self, origin: Path, stage: int, model: str | None = None) -> Entry:
        entry = self.cache.ensure(origin, stage, model, verify=self.cfg.verify)
        self._drop_evicted(entry.evicted)
        return entry

    def spawn(self, req: ReplicaRequest, mode: str = "fork", weights: str = "T1",
              pooled_only: bool = False, defer_save: bool = False) -> dict[str, Any] | None:
        """Make a replica; returns its record (pid, url, tier, spawn_ms, zygote_pid...).

        ``pooled_only``: hand an idle pooled worker over, or do nothing (None) at once when
        none is ready as ``req`` needs it, or the function is busy (a zygote or a pooled
        worker being made): the provider calls this inline on its scale call, where a fork
        or a cold start must not run, and then makes the replica the slow way elsewhere.
        ``defer_save``: ``state.json`` is written, and the spawn logged, by the caller's
        ``flush()`` (the API, after its reply: 0.5 ms less on the scale-up path)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if weights not in WEIGHT_TIERS:
            raise ValueError(f"weights must be one of {WEIGHT_TIERS}")
        t0 = time.perf_counter()
        flock = self._flocks[req.function]
        if not pooled_only:
            flock.acquire()
        elif mode != "fork" or not self.pool.has_idle(req.function) or \
                not flock.acquire(blocking=False):
            return None
        try:
            made = self._make(req, mode, weights, pooled_only)
            if made is None:
                return None
            proc, tier, entry = made
            proc.stage = str(entry.key) if entry else ""
            proc.spawn_ms = round((time.perf_counter() - t0) * 1e3, 3)
            proc.tier = tier
            with self.lock:
                if entry and (mode == "fork" or weights == "T1"):
                    proc.segment = entry.segment_id
                    self.cache.pin(entry.key)
                self.replicas[proc.pid] = proc
                self._dirty = True
                self._spawned.append((f"{req.function}-{req.index}", proc))
        finally:
            flock.release()
        self.on_spawn(tier, proc.spawn_ms / 1e3)  # counted once answered
        if not defer_save:
            self.flush()
        return proc.to_json()

    def _make(self, req: ReplicaRequest, mode: str, weights: str,
              pooled_only: bool) -> tuple[Proc, str, Entry | None] | None:
        """The replica's process, its tier and its stage's T1 entry (see ``spawn``)."""
        st = req.stage()
        entry = self.ensure(*st) if st else None
        if mode == "process":
            tier = "cold" if weights == "T3" else weights
            return start_process(self.cfg, req, entry, weights), tier, entry
        if pooled_only:
            z = self._warm_zygote(req.function, req.config_key(), entry)
            proc = self._from_pool(req, z) if z is not None else None
            return (proc, "T0", entry) if proc is not None else None
        z, tier = self._zygote_for(req, entry)
        proc = (self._from_pool(req, z) if tier == "T0" else None) or fork_replica(z, req)
        return proc, tier, entry

    def _from_pool(self, req: ReplicaRequest, z: Proc) -> Proc | None:
        """A pooled worker of ``z`` handed over as this replica (None: the pool is empty)."""
        w = self.pool.take(req.function, z)
        proc = hand_over(w, req) if w is not None else None
        if proc is not None:
            proc.pooled = True
        return proc

    def _prefork(self, function: str) -> Pooled | None:
        """One idle worker for the pool of ``function``, from its zygote as it is now."""
        with self._flocks[function]:
            with self.lock:
                z = self.zygotes.get(function)
                rec = self._recipes.get(function)
                if self._closing or self._recycling[function] or z is None or rec is None:
                    return None
            if not z.alive():
                return None
            return prefork(z, ReplicaRequest.from_json(rec))

    def set_pool(self, function: str, size: Any) -> None:
        """The autoscaler's forecast of the next scale-up of ``function``, in workers."""
        self.pool.set_size(function, size)

    def kill(self, pid: int, grace_s: float = 5.0) -> bool:
        with self.lock:
            proc = self.replicas.get(pid)
        if proc is None:
            return False
        proc.terminate(grace_s)
        self._forget(proc)
        return True

    def reap(self) -> int:
        """Forget replicas and zygotes that died (crash, OOM kill, kill -9); unpin their stages."""
        with self.lock:
            dead = [p for p in self.replicas.values() if not p.alive()]
            deadz = [f for f, z in self.zygotes.items() if not z.alive()]
        for p in dead:
            self._forget(p)
        self.pool.reap()
        with self.lock:
            for f in deadz:
                z = self.zygotes.get(f)
                if z is not None and not z.alive():
                    del self.zygotes[f]
                    Path(z.sock).unlink(missing_ok=True)
                    log.warning("zygote of %s (pid %d) died", f, z.pid)
            if deadz:
                self._save()
            running = {r.function for r in self.replicas.values()} - {r.function for r in dead}
            warm = {f: z for f, z in self.zygotes.items() if f not in deadz}
        self.pool.prune(warm)
        for f in warm:
            self.pool.refill(f)
        self.heal_zygotes(running)
        return len(dead) + len(deadz)

    def scrub(self) -> list[str]:
        """Full re-hash of T1; zygotes and replicas mapping a rebuilt segment are recycled."""
        rebuilt = self.cache.scrub()
        for key in rebuilt:
            log.error("T1 segment %s was corrupt: rebuilt from the lower tier", key)
            self._recycle(str(key))
        return [str(k) for k in rebuilt]

    def evict(self, key: StageKey, disk: bool = False) -> bool:
        present = self.cache.evict(key, disk)  # refused (ValueError) while pinned
        self._drop_evicted((key,))
        return present

    def status(self) -> dict[str, Any]:
        with self.lock:
            zy = [z.to_json() | {"alive": z.alive()} for z in self.zygotes.values()]
            reps = [r.to_json() | {"alive": r.alive()} for r in self.replicas.values()]
        return {"pid": os.getpid(), "cache": self.cache.status(), "zygotes": zy,
                "replicas": reps, "recycled": self.recycled, "pool": self.pool.status(),
                "shm_dir": str(self.cfg.shm_dir), "disk_dir": str(self.cfg.disk_dir)}

    def shutdown(self) -> None:
        """Stop the zygotes and release T1 (running replicas keep their private mappings:
        unlinking a mapped file frees its memory only when the last mapping goes); the
        replicas as well when ``stop_replicas_at_shutdown`` says nothing will stop them."""
        with self.lock:
            self._closing = True
            warming = list(self._threads)
        for t in warming:  # a zygote being warmed again sees _closing and stops itself
            t.join(10.0)
        self.pool.close()
        if self.stop_replicas_at_shutdown:
            self._stop_replicas()
        with self.lock:
            for z in self.zygotes.values():
                z.terminate(5.0)
                Path(z.sock).unlink(missing_ok=True)
            self.zygotes.clear()
            self._save()
        self.cache.close(remove_shm=True)

    def _stop_replicas(self) -> None:
        """Every replica at once (each gets its SIGTERM grace in its own thread)."""
        with self.lock:
            procs = list(self.replicas.values())
        stoppers = [threading.Thread(target=p.terminate, args=(2.0,), daemon=True)
                    for p in procs]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(10.0)
        for p in procs:
            self._forget(p)
        log.info("stopped %d replica(s)", len(procs))

    def _recycle(self, stage: str) -> None:
        """The segment of ``stage`` was replaced: its zygote and the replicas forked from it
        map pages that may be corrupt.  Stop them; the provider replaces the replicas.

        Until they are gone the functions count as recycling: the reaper would otherwise see
        "replicas alive, zygote gone" (a replica takes a while to exit on SIGTERM, longer on
        a busy CPU), take it for a crashed zygote and warm one again for replicas about to
        die, so whether the replacement is forked from that zygote or starts its own
        depended on timing (tests/test_keys_heal.py)."""
        with self.lock:
            zs = [f for f, z in self.zygotes.items() if z.stage == stage]
            victims = [r for r in self.replicas.values() if r.stage == stage and r.segment and
                       r.segment != self._segment_now(stage)]
            fns = Counter(set(zs) | {r.function for r in victims})
            self._recycling += fns
        try:
            for f in zs:
                self._stop_zygote(f)
            for r in victims:
                log.error("stopping replica pid %d of %s: it maps a replaced segment", r.pid,
                          stage)
                r.terminate(2.0)
                self._forget(r)
                self.recycled += 1
        finally:
            with self.lock:
                self._recycling -= fns

    def _segment_now(self, stage: str) -> str:
        return self.cache.segment_id(StageKey.parse(stage))

    def _drop_evicted(self, keys: tuple[StageKey, ...]) -> None:
        names = {str(k) for k in keys}
        with self.lock:
            fns = [f for f, z in self.zygotes.items() if z.stage in names]
        for f in fns:
            log.info("stage of %s evicted from T1: stopping its zygote", f)
            self._stop_zygote(f)

    def _forget(self, proc: Proc) -> None:
        with self.lock:
            if self.replicas.pop(proc.pid, None) is None:
                return
            if proc.segment:
                try:
                    self.cache.unpin(StageKey.parse(proc.stage))
                except ValueError:
                    pass
            self._save()

    # ------------------------------------------------------------------ persistence

    def flush(self) -> None:
        """Write ``state.json`` if a spawn left it behind (``defer_save``), and log what was
        spawned: after the API's answer, none of it delays a replica."""
        with self.lock:
            if self._dirty:
                self._save()
            spawned, self._spawned = self._spawned, []
        for name, proc in spawned:
            log.info("spawned %s pid %d tier %s in %.1f ms", name, proc.pid, proc.tier,
                     proc.spawn_ms)

    def _save(self) -> None:
        with self.lock:
            self._dirty = False
            state_file.save(self.state_file, list(self.zygotes.values()),
                            list(self.replicas.values()), self._recipes)

    def _restore(self) -> None:
        """Adopt what survived a crash of the previous agent (``state_file.restore``) and
        pin the stages its replicas map."""
        found = state_file.restore(self.state_file, self.zygote_dir)
        self._recipes.update(found.recipes)
        self.zygotes.update(found.zygotes)
        self.replicas.update(found.replicas)
        for r in found.replicas.values():
            if r.segment:
                self.cache.pin(StageKey.parse(r.stage))
        self._save()
