"""The ``Server-Timing`` header a pipeline answers with, and its one parser.

Every stage puts its own compute time first and appends what its downstream
stage answered, so the header of a pipeline call lists every stage in order::

    Server-Timing: stage0;dur=12.30, stage1;dur=11.80, stage2;dur=12.05

(W3C Server Timing: ``name;dur=<milliseconds>``, metrics separated by commas,
other parameters such as ``desc`` allowed.)  The gateway exports the first
entry as the replica's own compute time; the benchmarks read all of them.

The stage handler writes the header (``functions/stage/server.py``,
``decoder_server.py``) without importing this module: the handler folder
ships alone into a function image.  ``tests/test_contracts.py`` parses what
the real stage code writes with ``parse`` below.
"""
from __future__ import annotations

HEADER = "Server-Timing"
MAX_MS = 1e9  # a duration this long is a broken clock, not a measurement


def entry(name: str, seconds: float) -> str:
    """One metric, ``name;dur=<ms>`` with two decimals, as the stages write it."""
    return f"{name};dur={seconds * 1e3:.2f}"


def join(own: str, downstream: str | None) -> str:
    """This stage's entry first, then whatever the next stage reported."""
    return f"{own}, {downstream}" if downstream else own


def _duration_ms(params: list[str]) -> float | None:
    for param in params:
        k, _, v = param.strip().partition("=")
        if k.strip().lower() == "dur":
            try:
                ms = float(v.strip().strip('"'))
            except ValueError:
                return None
            return ms if 0 <= ms < MAX_MS else None
    return None


def parse(value: str | None) -> list[tuple[str, float]]:
    """(name, seconds) of every metric that carries a valid ``dur``, in header order."""
    out = []
    for metric in (value or "").split(","):
        name, *params = metric.split(";")
        ms = _duration_ms(params)
        if name.strip() and ms is not None:
            out.append((name.strip(), ms / 1e3))
    return out


def first_seconds(value: str | None) -> float | None:
    """Seconds of the first metric (a stage's own compute), or None when the first metric
    has no valid ``dur``: a later entry is a downstream stage's time, never this one's."""
    if not value:
        return None
    ms = _duration_ms(value.split(",", 1)[0].split(";")[1:])
    return None if ms is None else ms / 1e3


def total_seconds(value: str | None) -> float:
    """Sum of every stage's compute time in the header."""
    return sum(s for _, s in parse(value))
