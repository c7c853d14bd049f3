"""Per-second average concurrency per function, live: what Knative's queue-proxies and Ray
Serve's replicas report, read from the local gateway as the simulator's
``benchmark.sim.concurrency.ConcurrencyMeter`` reads its model.

Why: KPA averages each pod's per-second concurrency over its 60 s stable and 6 s panic
windows, Ray Serve its replicas' ongoing requests (recorded every 0.5 s) over its
look-back.  Live, the driver gave both one gauge snapshot per control tick from Prometheus
(scraped every second), while the simulator gave them ten samples a second: the same
policy read a different signal in the two modes, and the validation compared that, not
the model (KPA's live P99 twice its simulated one at CV 8).

Every ``sample_s`` the meter reads the provider's per-function ``inflight`` and
``queueDepth`` (``GET /system/quart/stats``: the router's own counts, requests waiting
for a slot plus those holding one, as the simulator counts ``queue + inflight``) and
closes each wall-clock second as the mean of its samples; ``drain`` hands the seconds
closed since the last call to the tick (``Tick.concurrency``).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import requests

log = logging.getLogger("benchmark.live")

STATS = "/system/quart/stats"


class LiveConcurrencyMeter:
    def __init__(self, gateway: str, auth: tuple[str, str] | None, sample_s: float = 0.1,
                 clock: Callable[[], float] = time.time) -> None:
        if not (math.isfinite(sample_s) and 0 < sample_s <= 1.0):
            raise ValueError(f"sample_s must be in (0, 1], got {sample_s!r}")
        self.url = gateway.rstrip("/") + STATS
        self.auth, self.sample_s, self.clock = auth, sample_s, clock
        self.session = requests.Session()
        self.session.trust_env = False
        self.second: int | None = None  # the wall-clock second being filled
        self.sums: dict[str, float] = {}
        self.n = 0
        self.closed: dict[str, list[tuple[float, float]]] = {}
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="concurrency-meter", daemon=True)

    def start(self) -> LiveConcurrencyMeter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except (requests.RequestException, ValueError) as e:
                self.errors += 1  # a missed sample: the second's mean is of the others
                if self.errors <= 3:
                    log.warning("concurrency meter: %s", e)
            nxt += self.sample_s
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def sample(self) -> None:
        r = self.session.get(self.url, auth=self.auth, timeout=2)
        r.raise_for_status()
        stats = r.json()
        now = self.clock()
        self.add(now, {name: float(s.get("inflight", 0)) + float(s.get("queueDepth", 0))
                       for name, s in stats.items() if isinstance(s, dict)})

    def add(self, now: float, counts: dict[str, float]) -> None:
        """One sample of every function's concurrency taken at ``now`` (wall clock)."""
        sec = math.floor(now)
        with self._lock:
            if self.second is not None and sec > self.second and self.n:
                self._close()
            if self.second is None or sec > self.second:
                self.second = sec
            for name, c in counts.items():
                self.sums[name] = self.sums.get(name, 0.0) + c
            self.n += 1

    def _close(self) -> None:
        assert self.second is not None
        end = float(self.second + 1)  # a second's value is reported when it ends
        for name, total in self.sums.items():
            self.closed.setdefault(name, []).append((end, total / self.n))
        self.sums = {}
        self.n = 0

    def drain(self) -> dict[str, tuple[tuple[float, float], ...]]:
        """Per function, the (end of second, mean concurrency) pairs closed since the last
        call."""
        with self._lock:
            out = {k: tuple(v) for k, v in self.closed.items()}
            self.closed = {}
        return out
