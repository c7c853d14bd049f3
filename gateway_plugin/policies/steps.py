"""What a decision step reports: its policy, its name, and why it moved a value.

Every policy here is a chain of small pure steps, each a function that
returns ``(value, reason)`` (Ray Serve's ``_apply_bounds`` /
``_apply_delay_logic`` in python/ray/serve/autoscaling_policy.py).  A step
whose value differs from the one it was given *changed* it; the last such step
is the one a decision record names, as Kubernetes' HPA names the condition
that limited a scale (pkg/controller/podautoscaler).  The steps say so
themselves, so the control loop records it instead of guessing afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Step", "last_change"]


class Step(NamedTuple):
    """The step that set a value: ``policy`` (corrector, smoother, cpu, bounds), ``step``
    (its name within the policy, e.g. ``band``) and ``reason`` (why, in its words).

    A tuple, not a dataclass: thousands are made per control period and it is JSON as is.
    """

    policy: str
    step: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"policy": self.policy, "step": self.step, "reason": self.reason}


def last_change(policy: str, start: float,
                steps: Sequence[tuple[str, float, str]]) -> Step | None:
    """The last of ``steps`` (name, value it left, reason) that changed the value it was
    given, the first one being given ``start``; ``None`` when no step moved it."""
    found, value = None, start
    for entry in steps:  # a plain forward pass: a thousand stages per period come through
        if entry[1] != value:
            found = entry
        value = entry[1]
    return None if found is None else Step(policy=policy, step=found[0], reason=found[2])
