"""The agent's warm zygotes: which one serves a request (T0), starting and stopping one, and
warming one again after a crash, for functions that still run replicas (agent.py says why).

A mixin of ``KeysManager``, which owns the state and its lock; kept apart so that agent.py
reads as the API and its bookkeeping.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from keys_manager.cache import Entry
from keys_manager.config import AgentConfig
from keys_manager.launch import SpawnError, recipe, start_zygote
from keys_manager.pool import WarmPool
from keys_manager.procs import Proc
from keys_manager.request import ReplicaRequest

log = logging.getLogger("keys_manager.agent")
REWARM_EVERY_S = 10.0  # at most one new zygote per function in this time (crash loops)


class Zygotes:
    cfg: AgentConfig
    zygote_dir: Path
    zygotes: dict[str, Proc]
    replicas: dict[int, Proc]
    lock: threading.RLock
    pool: WarmPool
    _flocks: defaultdict[str, threading.Lock]
    _recipes: dict[str, dict[str, Any]]
    _rewarmed: dict[str, float]
    _rewarming: set[str]
    _recycling: Counter[str]
    _threads: list[threading.Thread]
    _closing: bool

    def ensure(self, origin: Path, stage: int, model: str | None = None) -> Entry:
        raise NotImplementedError

    def _recycle(self, stage: str) -> None:
        raise NotImplementedError

    def _save(self) -> None:
        raise NotImplementedError

    def heal_zygotes(self, running: set[str]) -> list[str]:
        """Warm a zygote again, in the background, for each function in ``running`` (it has
        live replicas) whose zygote is gone; returns the functions being warmed."""
        now = time.monotonic()
        with self.lock:
            if self._closing:
                return []
            self._threads = [t for t in self._threads if t.is_alive()]
            want = [f for f in sorted(running) if f in self._recipes
                    and f not in self.zygotes and f not in self._rewarming
                    and not self._recycling[f]
                    and now - self._rewarmed.get(f, -REWARM_EVERY_S) >= REWARM_EVERY_S]
            for f in want:
                self._rewarming.add(f)
                self._rewarmed[f] = now
            for f in want:
                t = threading.Thread(target=self._rewarm, args=(f,), daemon=True,
                                     name=f"rewarm-{f}")
                self._threads.append(t)
                t.start()
        return want

    def _rewarm(self, function: str) -> None:
        try:
            req = ReplicaRequest.from_json(self._recipes[function])
            with self._flocks[function]:
                with self.lock:
                    z = self.zygotes.get(function)
                    left = any(r.function == function for r in self.replicas.values())
                    if not left:  # recycled or scaled to zero since the reaper looked
                        self._rewarmed.pop(function, None)
                if z is not None and z.alive() or not left:
                    return  # a spawn got there first, or nothing runs to warm it for
                st = req.stage()
                z, tier = self._zygote_for(req, self.ensure(*st) if st else None)
            log.info("zygote of %s warm again (pid %d, weights %s)", function, z.pid, tier)
        except Exception as e:  # noqa: BLE001 - the next spawn starts one the slow way
            log.error("zygote of %s could not be warmed again: %s", function, e)
        finally:
            with self.lock:
                self._rewarming.discard(function)

    def _warm_zygote(self, function: str, key: str, entry: Entry | None) -> Proc | None:
        """The function's zygote if it is alive and made as asked (config ``key``, the T1
        segment of ``entry``): the T0 tier."""
        with self.lock:
            z = self.zygotes.get(function)
        if z is not None and z.alive() and z.key == key and \
                (entry is None or z.segment == entry.segment_id):
            return z
        return None

    def _zygote_for(self, req: ReplicaRequest, entry: Entry | None) -> tuple[Proc, str]:
        key = req.config_key()
        warm = self._warm_zygote(req.function, key, entry)
        if warm is not None:
            return warm, "T0"
        with self.lock:
            z = self.zygotes.get(req.function)
        if z is not None:
            if entry is not None and z.key == key and z.segment != entry.segment_id:
                log.warning("%s: segment replaced since its zygote mapped it", req.function)
                self._recycle(z.stage)
            else:
                self._stop_zygote(req.function)
        z = self._start_zygote(req, key, entry)
        return z, (entry.tier if entry else "cold")

    def _start_zygote(self, req: ReplicaRequest, key: str, entry: Entry | None) -> Proc:
        z = start_zygote(self.cfg, req, key, entry, self.zygote_dir, lambda: self._closing)
        with self.lock:
            closing = self._closing
            if not closing:
                self.zygotes[req.function] = z
                self._recipes[req.function] = recipe(req)
                self._save()
        if closing:  # shutdown() has stopped the others: this one must not outlive it
            z.terminate(2.0)
            Path(z.sock).unlink(missing_ok=True)
            raise SpawnError("keys_manager is shutting down")
        log.info("zygote of %s ready (pid %d, weights %s)", req.function, z.pid,
                 entry.tier if entry else "none")
        return z

    def _stop_zygote(self, function: str) -> None:
        with self.lock:
            z = self.zygotes.pop(function, None)
            self._save()
        self.pool.drain(function)
        if z is not None:
            z.terminate(5.0)
            Path(z.sock).unlink(missing_ok=True)
