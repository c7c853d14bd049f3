"""The seed's ScoringService: the model behind a lock, written through to a store.

Every decision and observation changes the in-memory model first and is
then written to the store (only the records it changed, as absolute values).
When the store fails, the service keeps answering from memory:

* changed records stay marked and are written by the first save that
  works (a background thread retries every second, with backoff);
* if the state was never read (the store was down at start-up), the
  events since start are kept (bounded) and, once the store answers, are
  replayed on top of what it holds, so an outage at start does not
  overwrite what earlier runs learned;
* ``/healthz`` says which of these is happening.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from scorer.config import ScorerConfig
from scorer.model import Posterior, SchedulerModel, Slowdown
from scorer.sinkhorn import sinkhorn
from scorer.store import Backend, Key, Snapshot, StoreError
from scorer.validate import AssignRequest, ObserveRequest, ScoreRequest

log = logging.getLogger("scorer")

RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
PENDING_MAX = 100_000  # events kept while the state was never read


class ScoringService:
    def __init__(self, cfg: ScorerConfig, backend: Backend,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.backend, self.clock = cfg, backend, clock
        self.lock = threading.Lock()
        self.model = SchedulerModel(cfg)
        self.loaded = False          # state read from the backend
        self.up = False              # the backend answered the last time we asked
        self.last_error: str | None = None
        self._dirty_post: set[Key] = set()
        self._dirty_slow: set[Key] = set()
        self._dirty_meta = False
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=PENDING_MAX)
        self._retry_at, self._backoff = 0.0, RETRY_MIN_S
        with self.lock:
            self._sync(force=True)

    # ------------------------------------------------------------------ API

    def score(self, req: ScoreRequest) -> dict[str, Any]:
        with self.lock:
            d = self.model.decide(req.job_type, req.candidate_gpu_types, req.colocated_on,
                                  record=not req.dry_run)
            if not req.dry_run:
                self._dirty_meta = True
                if not self.loaded:
                    self._pending.append(("decision", d.exploratory, d.capped))
                self._sync()
            return {
                "job_type": d.job_type,
                "selected_gpu_type": d.selected,
                "exploratory": d.exploratory,
                "capped": d.capped,
                "reason": d.reason,
                "candidates": [dict(rank=i + 1, **c.as_dict(self.cfg))
                               for i, c in enumerate(d.ranked)],
                "exploration_ratio": d.exploration_ratio,
                "exploration_cap": self.cfg.exploration_cap,
                "features": req.features,
                "recorded": not req.dry_run,
                "persisted": self._persisted(),
            }

    def observe(self, req: ObserveRequest) -> dict[str, Any]:
        with self.lock:
            learned = self._apply_observation(req.job_type, req.gpu_type,
                                              req.measured_runtime_s, req.colocated)
            if not self.loaded:
                self._pending.append(("observe", req.job_type, req.gpu_type,
                                      req.measured_runtime_s, list(req.colocated)))
            self._sync()
            p = self.model.belief(req.job_type, req.gpu_type)
            learned_slow = self.model.slowdowns.get(req.job_type, {})
            return {
                "job_type": req.job_type,
                "gpu_type": req.gpu_type,
                "learned": learned,
                "observations": p.n,
                "mu": p.mu,
                "sigma2": p.var,
                "sigma": math.sqrt(p.var),
                "tau2": p.noise,
                "information_gain": 0.5 * math.log1p(p.var / p.noise),
                "slowdowns": {k: learned_slow[k].s for k in sorted(set(req.colocated))
                              if k in learned_slow},
                "persisted": self._persisted(),
            }

    def assign(self, req: AssignRequest) -> dict[str, Any]:
        """Batched placement (Sinkhorn); a plan, so it records no decision."""
        with self.lock:
            rows = [self.model.rank(j.job_type, req.candidate_gpu_types, j.colocated_on)
                    for j in req.jobs]
        col = {g: i for i, g in enumerate(req.candidate_gpu_types)}
        cost = np.zeros((len(rows), len(col)))
        for i, ranked in enumerate(rows):
            for c in ranked:
                cost[i, col[c.gpu_type]] = c.cost
        caps = None if req.capacities is None else np.asarray(req.capacities, dtype=float)
        res = sinkhorn(cost, caps, req.epsilon, req.max_iter)
        gpus = req.candidate_gpu_types
        return {
            "assignment": [{"index": i, "job_type": j.job_type, "gpu_type": gpus[a],
                            "cost": float(cost[i, a])}
                           for i, (j, a) in enumerate(zip(req.jobs, res.assignment, strict=True))],
            "total_cost": float(sum(cost[i, a] for i, a in enumerate(res.assignment))),
            "plan": [[float(x) for x in row] for row in res.plan],
            "candidate_gpu_types": gpus,
            "capacities": (None if req.capacities is None
                           else dict(zip(gpus, req.capacities, strict=True))),
            "iterations": res.iterations,
            "converged": res.converged,
            "max_row_error": res.max_row_error,
            "epsilon": req.epsilon,
        }

    def status(self) -> dict[str, Any]:
        with self.lock:
            self._sync()
            unsaved = len(self._dirty_post) + len(self._dirty_slow) + int(self._dirty_meta)
            if not self.backend.persistent:
                msg = "SCHEDULER_DB=memory: state is lost on restart"
            elif self.up:
                msg = f"{self.backend.name} reachable, state persisted"
            elif self.loaded:
                msg = (f"{self.backend.name} unreachable: serving from memory, "
                       f"{unsaved} unsaved changes are written when it is back")
            else:
                msg = (f"{self.backend.name} unreachable since start: serving from memory; "
                       f"{len(self._pending)} events are replayed on its state when it is back")
            return {"ok": True, "db": self.backend.name, "store_up": self.up,
                    "state_loaded": self.loaded, "unsaved_changes": unsaved,
                    "pending_events": len(self._pending), "last_error": self.last_error,
                    "message": msg}

    def sync(self) -> bool:
        """Write what is unsaved (the background flusher calls this)."""
        with self.lock:
            return self._sync()

    def stats(self) -> dict[str, float]:
        with self.lock:
            m = self.model
            return {**{k: float(v) for k, v in m.counters().items()},
                    "exploration_ratio": m.window.ratio(),
                    "avg_uncertainty": m.avg_uncertainty(),
                    "pairs": float(m.pairs()),
                    "interference_pairs": float(sum(1 for _ in m.iter_slowdowns())),
                    "store_up": float(self.up)}

    # ------------------------------------------------------------------ internals

    def _persisted(self) -> bool:
        return self.backend.persistent and self.up and self.loaded and not (
            self._dirty_post or self._dirty_slow or self._dirty_meta)

    def _apply_observation(self, job: str, gpu: str, y: float, colocated: list[str]) -> str:
        learned, slow = self.model.observe(job, gpu, y, colocated)
        if learned == "posterior":
            self._dirty_post.add((job, gpu))
        self._dirty_slow.update(slow)
        self._dirty_meta = True
        return learned

    def _sync(self, force: bool = False) -> bool:
        if not self.backend.persistent:
            self.up = self.loaded = True
            self._dirty_post.clear()
            self._dirty_slow.clear()
            self._dirty_meta = False
            return True
        if not force and not self.up and self.clock() < self._retry_at:
            return False
        try:
            if not self.loaded:
                self._adopt(self.backend.load())
            if self._dirty_post or self._dirty_slow or self._dirty_meta:
                self.backend.save(self._unsaved())
                self._dirty_post.clear()
                self._dirty_slow.clear()
                self._dirty_meta = False
        except StoreError as e:
            if self.up or self.last_error is None:
                log.error("%s unreachable (%s): serving from memory", self.backend.name, e)
            self.up, self.last_error = False, str(e)
            self._retry_at = self.clock() + self._backoff
            self._backoff = min(RETRY_MAX_S, self._backoff * 2)
            return False
        if not self.up and self.last_error is not None:
            log.warning("%s is back: unsaved state written", self.backend.name)
        self.up, self._backoff = True, RETRY_MIN_S
        return True

    def _adopt(self, snap: Snapshot) -> None:
        """State read from the store, then the events served from memory before it answered."""
        fresh = SchedulerModel(self.cfg)
        for (job, gpu), rec in snap.posteriors.items():
            try:
                p = Posterior(int(rec["n"]), float(rec["mu"]), float(rec["var"]),
                              float(rec["noise"]))
            except (KeyError, TypeError, ValueError):
                log.warning("skipping unreadable posterior %s/%s: %r", job, gpu, rec)
                continue
            if all(math.isfinite(x) for x in (p.mu, p.var, p.noise)) and p.var > 0 < p.noise:
                fresh.posteriors.setdefault(job, {})[gpu] = p
        for (job, other), rec in snap.slowdowns.items():
            try:
                fresh.slowdowns.setdefault(job, {})[other] = Slowdown(float(rec["s"]),
                                                                      int(rec["n"]))
            except (KeyError, TypeError, ValueError):
                log.warning("skipping unreadable slowdown %s/%s: %r", job, other, rec)
        c = snap.counters or {}
        fresh.window.load(snap.window or "", c.get("decisions", 0), c.get("exploratory", 0),
                          c.get("capped", 0))
        fresh.observations = c.get("observations", 0)
        replay, self._pending = list(self._pending), deque(maxlen=PENDING_MAX)
        self.model = fresh
        self.loaded = True
        self._dirty_post.clear()  # the replay marks again what it changes in ``fresh``
        self._dirty_slow.clear()
        for ev in replay:
            if ev[0] == "decision":
                fresh.window.record(ev[1], ev[2])
                self._dirty_meta = True
            else:
                self._apply_observation(*ev[1:])
        if replay:
            log.info("state read from %s: %d pairs; %d events served from memory replayed",
                     self.backend.name, fresh.pairs(), len(replay))

    def _unsaved(self) -> Snapshot:
        m = self.model
        snap = Snapshot(
            {(j, g): asdict(m.posteriors[j][g]) for j, g in self._dirty_post},
            {(j, k): asdict(m.slowdowns[j][k]) for j, k in self._dirty_slow})
        if self._dirty_meta:
            snap.counters = m.counters()
            snap.window = m.window.dump_bits()
        return snap
