"""When the control loop runs its next cycle: the timer every period, and alerts coalesced.

Why coalesced and not one cycle per webhook: 200 webhooks at 10/s drove 204 control cycles
in 20 s, 50 times the normal rate (issue 18, finding 3).  A cycle reads every metric and
may scale, so a webhook is a *request* for an early cycle, not a cycle:

* the function names of every alert are pooled until the loop picks them up;
* at most one alert-triggered cycle runs per ``min_interval_s`` (default: one period), so
  alerts add at most one cycle per interval to the timer's, however many arrive;
* a timer cycle covers every pipeline, so it also serves whatever alerts are pending.

Nothing an alert asked for is lost or refused (AlertManager does not resend a 429 soon);
the webhook answers 202 with when the cycle that covers it will run.  Time is an argument
(``now``, monotonic seconds), so the rule is tested with a fake clock.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Triggers:
    """Pending alert names, and the schedule of timer and alert cycles."""

    def __init__(self, period_s: float = 5.0, min_interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.min_interval_s = period_s if min_interval_s is None else min_interval_s
        self.clock = clock
        self.event = threading.Event()  # set when names arrive (and to wake a stopping loop)
        self._lock = threading.Lock()
        self._functions: set[str] = set()
        self._next_timer = clock()  # the first cycle runs at once
        self._last_alert = -math.inf

    def _alert_at(self) -> float:
        return self._last_alert + self.min_interval_s

    def add(self, functions: set[str]) -> tuple[float, bool]:
        """Pool the names; (seconds until the cycle that covers them, whether an earlier
        alert's cycle was already waiting, so this one merged into it)."""
        now = self.clock()
        with self._lock:
            coalesced = bool(self._functions)
            self._functions |= functions
            at = min(self._next_timer, max(now, self._alert_at()))
        self.event.set()
        return max(0.0, at - now), coalesced

    def pending(self) -> set[str]:
        with self._lock:
            return set(self._functions)

    def due(self, now: float) -> tuple[str, set[str] | None] | None:
        """The cycle to run now: ("timer", None) for every pipeline, ("alert", names) for the
        pipelines of those functions, or None when neither is due yet."""
        with self._lock:
            if now >= self._next_timer:
                self._functions.clear()  # a timer cycle looks at every pipeline
                return "timer", None
            if self._functions and now >= self._alert_at():
                names, self._functions = self._functions, set()
                return "alert", names
        return None

    def done(self, kind: str, now: float) -> None:
        """A cycle of ``kind`` ended at ``now``: the next timer cycle is a period later."""
        with self._lock:
            if kind == "timer":
                self._next_timer = now + self.period_s
            else:
                self._last_alert = now

    def wait(self, stop: threading.Event) -> None:
        """Block until a cycle may be due: the next timer, new alert names, or, with names
        already pending, the end of the alert interval (not a busy loop on the set event)."""
        now = self.clock()
        with self._lock:
            pending = bool(self._functions)
            until = min(self._next_timer, self._alert_at() if pending else math.inf)
            if not pending:
                self.event.clear()  # under the lock: add() sets it after adding names
        timeout = max(0.0, until - now)
        if pending:
            stop.wait(timeout)
        else:
            self.event.wait(timeout)
