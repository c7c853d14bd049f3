"""The Azure Functions Invocation Trace 2021 layout: one row per invocation.

``AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt`` (Azure/AzurePublicDataset,
``AzureFunctionsInvocationTrace2021.md``) is a CSV with the header
``app,func,end_timestamp,duration`` (seconds; ``func`` is unique only within
its ``app``).  A request's send time is ``end_timestamp - duration``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.workloads.arrivals import Arrivals
from benchmark.workloads.trace_select import (
    TargetNames,
    bad,
    index_targets,
    positive_scale,
    select,
    sha256_file,
    window,
)

__all__ = ["INVOCATION_HEADER", "InvocationTrace", "read_invocations"]

INVOCATION_HEADER = ("app", "func", "end_timestamp", "duration")


@dataclass(frozen=True, eq=False)
class InvocationTrace:
    """Per-invocation records of the 2021 layout: one start time per invocation."""

    apps: tuple[str, ...]           # one entry per distinct (app, func)
    funcs: tuple[str, ...]
    function: np.ndarray            # int32 per invocation: index into apps/funcs
    start_s: np.ndarray             # end_timestamp - duration
    source: str = ""
    source_sha256: str = ""

    def to_arrivals(self, top_n: int | None = None, minute_range: tuple[int, int] | None = None,
                    time_scale: float = 1.0, target_names: TargetNames = None,
                    name: str | None = None) -> Arrivals:
        """Invocations whose start lies in the minute range, times from the range's start.

        Without a range, minute 0 starts at trace time 0 and the range runs to the
        minute of the last start; invocations that started before 0 are dropped.
        """
        last = float(self.start_s.max()) if len(self.start_s) else 0.0
        a, b = window(minute_range, max(1, int(np.floor(last / 60.0)) + 1))
        scale = positive_scale(time_scale)
        keep = (self.start_s >= a * 60.0) & (self.start_s < b * 60.0)
        fn = self.function[keep]
        volume = np.bincount(fn, minlength=len(self.funcs))
        order, names = select(self.apps, self.funcs, volume, top_n, target_names)
        targets, sel_target = index_targets(names)
        fn_target = np.full(len(self.funcs), -1, dtype=np.int32)
        fn_target[order] = sel_target
        tgt = fn_target[fn]
        chosen = tgt >= 0
        dur = (b - a) * 60.0 * scale
        t = np.minimum((self.start_s[keep][chosen] - a * 60.0) * scale, np.nextafter(dur, 0.0))
        sort = np.argsort(t, kind="stable")
        params: dict[str, Any] = {
            "source": Path(self.source).name, "source_sha256": self.source_sha256,
            "format": "azure-2021-invocations", "top_n": top_n, "minute_range": [a, b],
            "time_scale": scale,
            "dropped_before_start": int(np.sum(self.start_s < 0)) if minute_range is None else 0,
            "functions": {f"{self.apps[i]}/{self.funcs[i]}": n
                          for i, n in zip(order.tolist(), names, strict=True)}}
        meta = {"name": name or f"azure2021-{Path(self.source).stem or 'trace'}-m{a}-{b}",
                "kind": "azure-invocations", "seed": None, "parameters": params,
                "duration_s": dur}
        return Arrivals(t[sort], tgt[chosen][sort], targets, meta)


def read_invocations(path: str | Path) -> InvocationTrace:
    """Parse a 2021-layout file; a malformed one raises ValueError naming line and column."""
    p = Path(path)
    index: dict[tuple[str, str], int] = {}
    fn: list[int] = []
    start: list[float] = []
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{p}: empty file (expected the header "
                                 f"{','.join(INVOCATION_HEADER)})")
            if [h.strip() for h in header] != list(INVOCATION_HEADER):
                raise bad(p, 1, f"header must be {','.join(INVOCATION_HEADER)!r}, got "
                                 f"{','.join(header)!r}")
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if len(fields) != 4:
                    raise bad(p, line, f"expected 4 fields, got {len(fields)}")
                app, func = fields[0].strip(), fields[1].strip()
                if not app or not func:
                    raise bad(p, line, f"column {1 if not app else 2} "
                                        f"({'app' if not app else 'func'}) is empty")
                end, dur = (_parse_seconds(p, line, j, fields[j]) for j in (2, 3))
                if dur < 0:
                    raise bad(p, line, f"column 4 (duration) must be >= 0, got {fields[3]!r}")
                fn.append(index.setdefault((app, func), len(index)))
                start.append(end - dur)
    except OSError as e:
        raise ValueError(f"{p}: cannot read trace: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{p}: not a text CSV file: {e}") from None
    if not fn:
        raise ValueError(f"{p}: the trace has a header but no invocation rows")
    keys = list(index)
    return InvocationTrace(tuple(k[0] for k in keys), tuple(k[1] for k in keys),
                           np.array(fn, dtype=np.int32), np.array(start, dtype=np.float64),
                           source=str(p), source_sha256=sha256_file(p))


def _parse_seconds(p: Path, line: int, j: int, v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        x = float("nan")
    if not np.isfinite(x):
        raise bad(p, line, f"column {j + 1} ({INVOCATION_HEADER[j]}) must be a number of "
                            f"seconds, got {v!r}")
    return x

