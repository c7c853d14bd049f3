"""Scale to zero: an idle function's last step, with OpenFaaS Pro's labels and meaning.

Why: a stage whose replica is handed over from keys_manager's warm pool wakes in
milliseconds (the gateway holds the request meanwhile), so an idle stage need not keep a
replica: only its zygote and one pooled worker, or only its T1 segment, stay.

Labels, as OpenFaaS Pro names them (docs.openfaas.com/openfaas-pro/scale-to-zero):
``com.openfaas.scale.zero: "true"`` opts a function in; ``com.openfaas.scale.zero-duration``
is how long it must be idle first, a Go duration ("5m", "90s", "1h30m"; default 15m, the
Pro idler's).  Idle means no arrivals and nothing queued or in flight, as far as the
control loop observed; the loop keeps when each function was last active (``last_active``
below) and passes the idle time in.  Pure: no clock, no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from contracts.names import LABEL_SCALE_ZERO, LABEL_SCALE_ZERO_DURATION

__all__ = ["DEFAULT_ZERO_DURATION_S", "last_active", "parse_duration", "scale_to_zero",
           "zero_window_s"]

DEFAULT_ZERO_DURATION_S = 15 * 60.0
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """A Go ``time.ParseDuration`` string in seconds ("5m", "1h30m", "90s", "250ms"); a bare
    number is seconds.  ValueError for anything else, or a negative duration."""
    t = text.strip()
    if not t:
        raise ValueError("empty duration")
    try:
        v = float(t)
    except ValueError:
        pos, v = 0, 0.0
        for m in _PART.finditer(t):
            if m.start() != pos:
                break
            v, pos = v + float(m[1]) * _UNITS[m[2]], m.end()
        if pos != len(t):
            raise ValueError(f"{text!r} is not a duration such as 5m, 90s or 1h30m") from None
    if v < 0 or v != v:
        raise ValueError(f"{text!r}: a duration must be >= 0")
    return v


def zero_window_s(labels: Mapping[str, str]) -> tuple[float | None, str]:
    """(idle seconds before zero, or None when the function did not opt in; a complaint
    about a label that could not be read, else "")."""
    if str(labels.get(LABEL_SCALE_ZERO, "")).strip().lower() != "true":
        return None, ""
    raw = labels.get(LABEL_SCALE_ZERO_DURATION)
    if raw is None:
        return DEFAULT_ZERO_DURATION_S, ""
    try:
        return parse_duration(str(raw)), ""
    except ValueError as e:
        return DEFAULT_ZERO_DURATION_S, f"{LABEL_SCALE_ZERO_DURATION}: {e}; using 15m"


def last_active(previous: float | None, now_s: float, busy: bool, woken: bool) -> float:
    """When the function was last active: now when it is busy (arrivals, a queue, calls in
    flight), when someone else raised its replicas (the gateway woke it from zero: the call
    that did so may not be in the metrics yet), or when it is first seen."""
    if previous is None or busy or woken:
        return now_s
    return previous


def scale_to_zero(replicas: int, idle_s: float, window_s: float | None) -> tuple[int, str]:
    """The step: ``(0, why)`` for an opted-in function idle for at least its window, else
    ``(replicas, "")`` unchanged."""
    if window_s is not None and idle_s >= window_s:
        return 0, f"idle {idle_s:.0f}s >= {LABEL_SCALE_ZERO_DURATION} {window_s:g}s: scale to zero"
    return replicas, ""
