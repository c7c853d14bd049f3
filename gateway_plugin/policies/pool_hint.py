"""How many idle workers keys_manager should keep pre-forked for a function: the forecast
of its next scale-up, so that the next one is a hand-over (keys_manager/pool.py), not a fork.

The forecast is the recent past, as a burst repeats its shape: a scale-up of ``k`` replicas
this period asks for ``k`` workers; without one the hint steps back by one per period, down
to one (a function at zero replicas keeps one, so that its wake is a hand-over too), and
never above ``cap`` (each idle worker holds a few MiB of its own).  Pure: the control loop
passes the previous hint in.
"""
from __future__ import annotations

__all__ = ["POOL_CAP", "pool_hint"]

POOL_CAP = 8


def pool_hint(target: int, current: int, previous: int | None,
              cap: int = POOL_CAP) -> tuple[int, str]:
    """(workers to keep pre-forked, why)."""
    up = target - current
    held = max(1, (previous or 1) - 1)
    if up > 0 and up >= held:
        n = min(cap, up)
        return n, f"scale-up of {up}: {n} pre-forked for the next one"
    n = min(cap, held)
    if previous is None or n == previous:
        return n, ""
    return n, f"no larger scale-up: {previous} -> {n} pre-forked"
