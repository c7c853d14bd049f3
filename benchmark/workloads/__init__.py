"""Seeded, reproducible open-loop workloads that every compared system replays identically.

Generate once, save, print the sha256, and give the same file to the
simulator and to the live harness: :class:`Arrivals` is the one currency.
See ``python -m benchmark.workloads --help``.
"""

from benchmark.workloads.arrivals import Arrivals, merge
from benchmark.workloads.azure import (
    InvocationTrace,
    MinuteTrace,
    load_azure,
    read_invocations,
    read_minute_counts,
)
from benchmark.workloads.generators import CV_SWEEP, gamma, poisson, ramp, step
from benchmark.workloads.synthetic import synthetic_azure, synthetic_invocations, write_samples

__all__ = [
    "CV_SWEEP",
    "Arrivals",
    "InvocationTrace",
    "MinuteTrace",
    "gamma",
    "load_azure",
    "merge",
    "poisson",
    "ramp",
    "read_invocations",
    "read_minute_counts",
    "step",
    "synthetic_azure",
    "synthetic_invocations",
    "write_samples",
]
