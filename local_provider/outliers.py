"""Outlier ejection: a replica that stops answering is routed around and replaced.

A hung replica (stopped, deadlocked, swapping) answers nothing, so Envoy's usual signal,
consecutive 5xx, never comes; what it does show is *no progress*: calls go in and none
come out.  The router keeps, per replica, the last sign of life (a call finished, a call
taken while idle: ``Replica.alive_at``) and, per function, the recent gaps between a
busy replica's signs of life (under load several calls overlap, so a gap is shorter than
a call; a stage that waits for the next one counts that wait in).  A replica whose calls
in flight have gone without one finishing for far longer than its function's gaps --
``max(min_s, factor x p99)``, or ``cold_s`` before enough were seen -- is a suspect.

A stall is also what a replica busy with one very long call looks like, so a suspect is
probed before it is ejected: ``GET /_/health`` with a short timeout.  The template runs
one more server thread than the gateway sends it calls (template/quart-python/index.py),
so a live replica answers however busy it is; a stopped or deadlocked one does not.  An
answer counts as a sign of life (the clock restarts); silence ejects it: out of routing
at once, killed after a short grace (``Registry.mark_dead(hung=...)``), replaced by the
reconcile loop.  Calls it never read are then re-sent to another replica by the proxy
(a close with unread data is a reset: local_provider/delivery.py); calls it had read
fail with a 502, as with any replica that dies.

As Envoy's ``max_ejection_percent`` does, a cap bounds the damage of a wrong verdict (a
whole stage slowed by a shared cause): at most that share of a function's replicas, and
at least one, per ``WINDOW_S``.

Kubernetes' liveness probe does the same job by polling on a fixed period; here the
probe is sent only when the traffic says something is wrong, so a healthy replica is
rarely probed and a hung one is caught within about ``min_s`` plus the probe timeout.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from local_provider.config import ProviderConfig

log = logging.getLogger("quart.outliers")

WINDOW_S = 30.0  # the cap's window
MIN_SAMPLES = 20  # calls of the function before its p99 is trusted
PERIOD_S = 0.5  # how often stalls are looked for


@dataclass(frozen=True)
class Suspect:
    uid: int
    stalled_s: float
    limit_s: float


def quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def stall_limit(gaps: Sequence[float], cfg: ProviderConfig) -> float:
    """How long calls in flight may go without one finishing before the replica is probed."""
    if len(gaps) < MIN_SAMPLES:
        return cfg.eject_cold_s
    return max(cfg.eject_min_s, cfg.eject_factor * quantile(gaps, 0.99))


def suspects(stalls: Mapping[int, float], gaps: Sequence[float], ejected_recently: int,
             cfg: ProviderConfig) -> list[Suspect]:
    """Replicas (by uid, stalled for how long) to probe, longest stalled first, within the
    cap.  ``stalls``: every routable replica of one function, 0 for those with nothing in
    flight."""
    limit = stall_limit(gaps, cfg)
    over = sorted(((s, uid) for uid, s in stalls.items() if s > limit), reverse=True)
    room = max(1, int(len(stalls) * cfg.eject_max_percent / 100)) - ejected_recently
    return [Suspect(uid, s, limit) for s, uid in over[:max(0, room)]]


_PROBE = urllib3.PoolManager(num_pools=16, maxsize=2, retries=False)


def answers_health(handle: Any, timeout_s: float) -> bool:
    """Does the replica answer its health path within ``timeout_s``?  A fresh connection
    each time: a pooled one could be the one the replica stopped reading."""
    url = handle.url + getattr(handle, "health_path", "/_/health")  # a pod: /_/ready
    try:
        r = _PROBE.request("GET", url, timeout=timeout_s, headers={"Connection": "close"})
        return r.status == 200
    except urllib3.exceptions.HTTPError:
        return False


class OutlierWatch:
    """The thread that looks for stalled replicas and ejects those that fail the probe."""

    def __init__(self, registry: Any, cfg: ProviderConfig,
                 probe: Callable[[Any, float], bool] = answers_health) -> None:
        self.registry = registry
        self.cfg = cfg
        self.probe = probe
        self._ejected: dict[str, deque[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.cfg.eject:
            return
        self._thread = threading.Thread(target=self._run, name="outliers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(PERIOD_S):
            try:
                self.tick()
            except Exception:  # the watch must outlive any one bad tick
                log.exception("outlier tick failed")

    def tick(self) -> int:
        """One look at every function; returns how many replicas were ejected."""
        ejected = 0
        for name in self.registry.names():
            try:
                pool = self.registry.get(name).pool
            except KeyError:
                continue
            now = time.monotonic()
            with pool.cond:
                live = {r.uid: r for r in pool.replicas if r.routable}
                stalls = {uid: r.stalled_s(now) for uid, r in live.items()}
                gaps = list(pool.gaps)
            recent = self._ejected.setdefault(name, deque())
            while recent and now - recent[0] > WINDOW_S:
                recent.popleft()
            for s in suspects(stalls, gaps, len(recent), self.cfg):
                r = live[s.uid]
                if r.handle is None or self.probe(r.handle, self.cfg.eject_probe_timeout_s):
                    with pool.cond:  # alive: busy with a long call, not hung
                        r.alive_at = max(r.alive_at, time.monotonic())
                    continue
                why = (f"no call finished in {s.stalled_s:.1f}s, limit {s.limit_s:.1f}s; "
                       f"/_/health silent for {self.cfg.eject_probe_timeout_s:g}s")
                if self.registry.mark_dead(name, r, hung=why):
                    with pool.cond:
                        pool.ejections += 1
                    recent.append(time.monotonic())
                    ejected += 1
                    self.registry.kick()
        return ejected
