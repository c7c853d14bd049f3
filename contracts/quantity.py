"""Kubernetes CPU quantities, as ``limits.cpu`` carries them on every path.

faas-cli writes them from ``stack.yml``, the provider enforces them as a CFS
quota (``local_provider/cpulimit.py``), the plugin reads them back from the
gateway and writes new ones (CPU compensation).  One parser, so a quantity
the provider accepts is one the plugin can read.
"""
from __future__ import annotations

import math
import re

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_QTY = re.compile(rf"^(?P<num>{_NUMBER})(?P<milli>m?)$")
# What parse_cpu reads, as a JSON Schema pattern: blank (no limit), or a quantity with
# spaces around.  The rules a pattern cannot state (> 0, finite) stay with parse_cpu.
CPU_PATTERN = rf"^\s*({_NUMBER}m?)?\s*$"


def parse_cpu(value: str) -> float | None:
    """A Kubernetes CPU quantity ("500m", "1", "1.5") in CPUs; None for "" (no limit)."""
    v = (value or "").strip()
    if not v:
        return None
    m = _QTY.match(v)
    if m is None:
        raise ValueError(f"invalid cpu quantity {value!r}: use e.g. \"500m\", \"1\" or \"1.5\"")
    cpus = float(m["num"]) / (1000 if m["milli"] else 1)
    if cpus <= 0:
        raise ValueError(f"cpu quantity {value!r} must be > 0")
    if not math.isfinite(cpus):  # 309+ digits: the quota, round(inf), raised in reconcile
        raise ValueError(f"cpu quantity {value[:20]!r}... is too large")
    return cpus


def format_cpu(cpus: float) -> str:
    """CPUs as whole millicores ("1500m"), the form the plugin writes back."""
    return f"{round(cpus * 1000)}m"
