"""Health that tells the truth (issue 18, finding 6).

``/healthz`` used to say ``{"ok": true}`` with its cycle count frozen while Redis and
Prometheus were down and after the gateway was gone.  Now it is ok only when

* the last *completed* control cycle is at most three periods old (a loop that is stuck,
  or whose cycles keep failing, is not ok), and
* the last cycle did not hold its decision for want of an input (gateway, Prometheus),
  and Redis answered (the scaling state is not being kept), naming each missing input.

Otherwise it answers 503 with the same JSON and ``missing``/``problems`` saying why, which
is what a readiness probe and an operator want.  ``/livez`` answers 503 only for the first
rule: a liveness probe restarts the process, which mends a stuck loop but not a Redis
outage (Kubernetes' advice: liveness must not depend on what a restart cannot fix).
Time is an argument (monotonic seconds), so the rules are tested with a fake clock.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

STALE_PERIODS = 3
INPUTS = ("gateway", "prometheus", "redis")


class Health:
    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._last_at: float | None = None
        self._missing: str | None = None
        self._reason = ""
        self._error = ""

    def cycled(self, outcome: dict[str, Any], now: float | None = None) -> None:
        """A cycle completed with ``outcome`` (Controller.cycle's answer)."""
        with self._lock:
            self._last_at = self.clock() if now is None else now
            held = outcome.get("hold")
            self._missing = outcome.get("missing") if held else None
            self._reason = str(outcome.get("reason", "")) if held else ""
            self._error = ""

    def failed(self, error: str) -> None:
        """A cycle raised: it did not complete, so the last completed one only ages."""
        with self._lock:
            self._error = error

    def stale(self, now: float) -> tuple[bool, float]:
        """(older than three periods?, age in seconds of the last completed cycle, or of the
        start when none completed yet)."""
        with self._lock:
            age = now - (self.started if self._last_at is None else self._last_at)
        return age > STALE_PERIODS * self.period_s, age

    def report(self, redis_up: bool, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """(ok, what ``/healthz`` shows)."""
        now = self.clock() if now is None else now
        stale, age = self.stale(now)
        with self._lock:
            missing = [m for m in (self._missing,) if m]
            reason, error, completed = self._reason, self._error, self._last_at is not None
        if not redis_up and "redis" not in missing:
            missing.append("redis")
        problems = []
        if stale:
            what = "last completed control cycle" if completed else "no control cycle since start"
            problems.append(f"{what} {age:.1f}s ago, more than {STALE_PERIODS} periods "
                            f"({STALE_PERIODS * self.period_s:g}s)"
                            + (f"; the last one failed: {error}" if error else ""))
        if reason:
            problems.append(reason)
        if "redis" in missing:
            problems.append("Redis does not answer: scaling state is kept in memory only")
        ok = not stale and not missing
        body: dict[str, Any] = {"ok": ok, "missing": missing, "problems": problems,
                                "last_cycle_age_s": round(age, 3) if completed else None,
                                "period_s": self.period_s}
        return ok, body
