"""Replay the public Azure Functions traces as open-loop arrivals.

Two public layouts are read (Azure/AzurePublicDataset on GitHub):

* **2019, per-minute counts** (``AzureFunctionsDataset2019.md``), files
  ``invocations_per_function_md.anon.dNN.csv`` with the header
  ``HashOwner,HashApp,HashFunction,Trigger,1,...,1440``: one row per function,
  one column per minute of the day holding the number of invocations.  The
  dataset notes that counts are recorded after the functions execute; like
  every replay of this trace we treat a minute's count as that minute's
  arrivals.  The trace gives no times inside a minute, so they are chosen
  here, seeded (``spacing``): ``"uniform"`` (default) draws each of the
  minute's c requests uniformly in the minute, which is exactly a Poisson
  process conditioned on its count; ``"even"`` spaces them evenly (the least
  bursty reading); ``"gamma"`` uses normalised Gamma(1/cv²) spacings, i.e. a
  gamma renewal process with CV ``cv`` conditioned on the count (``"poisson"``
  is ``"gamma"`` with cv = 1, equal in law to ``"uniform"``).
* **2021, per-invocation** (``AzureFunctionsInvocationTrace2021.md``), the file
  ``AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt``: CSV with header
  ``app,func,end_timestamp,duration`` (seconds); ``func`` is unique only within
  its ``app``.  The arrival is ``end_timestamp - duration``.

Both replays can keep the top-N functions by volume in a minute range,
compress or stretch time (``time_scale`` 0.1 plays an hour in six minutes at
ten times the rate) and name each function's target: a list of names in
volume order (repeats send several functions to one pipeline), a mapping
from ``"app/function"`` keys (or the bare function hash) to names, or, by
default, ``"<app[:8]>-<function[:8]>"``.  Minute ranges are 0-based and
half-open: ``(0, 60)`` is the file's minute columns 1..60.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.workloads.arrivals import Arrivals
from benchmark.workloads.azure2021 import INVOCATION_HEADER, InvocationTrace, read_invocations
from benchmark.workloads.trace_select import (
    TargetNames,
    bad,
    index_targets,
    positive_scale,
    select,
    sha256_file,
    window,
)

__all__ = ["INVOCATION_HEADER", "MINUTE_HEADER", "SPACINGS", "InvocationTrace", "MinuteTrace",
           "load_azure", "read_invocations", "read_minute_counts", "spread_counts"]

MINUTE_HEADER = ("HashOwner", "HashApp", "HashFunction", "Trigger")
SPACINGS = ("uniform", "even", "poisson", "gamma")


def spread_counts(counts: np.ndarray, rng: np.random.Generator, spacing: str = "uniform",
                  cv: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn a [functions, minutes] count matrix into (row, minute, fraction of the minute
    in [0, 1]) per request, vectorised."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    if spacing == "poisson":
        spacing, cv = "gamma", 1.0
    if spacing == "gamma" and not (np.isfinite(cv) and cv > 0):
        raise ValueError(f"cv must be a positive number, got {cv!r}")
    rows, mins = np.nonzero(counts)
    c = counts[rows, mins].astype(np.int64)
    total = int(c.sum())
    cell = np.repeat(np.arange(len(c)), c)
    first = np.cumsum(c) - c                       # index of each cell's first request
    if spacing == "uniform":
        frac = rng.random(total)
    elif spacing == "even":
        rank = np.arange(total) - first[cell]
        frac = (rank + 0.5) / c[cell]
    else:                                          # c + 1 normalised gamma gaps per cell
        k = 1.0 / (cv * cv)
        g = rng.gamma(k, 1.0 / k, total + len(c))
        cs = np.cumsum(g)
        start = first + np.arange(len(c))          # cell i's gaps sit at [start, start + c]
        base = np.where(start > 0, cs[np.maximum(start - 1, 0)], 0.0)
        span = cs[start + c] - base
        pos = start[cell] + (np.arange(total) - first[cell])
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(span[cell] > 0, (cs[pos] - base[cell]) / span[cell], 0.5)
    return rows[cell], mins[cell], frac


@dataclass(frozen=True, eq=False)
class MinuteTrace:
    """Per-function per-minute invocation counts, the 2019 trace's layout."""

    owners: tuple[str, ...]
    apps: tuple[str, ...]
    functions: tuple[str, ...]
    triggers: tuple[str, ...]
    counts: np.ndarray              # int64 [functions, minutes]
    source: str = ""
    source_sha256: str = ""

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 2 or counts.shape[1] < 1:
            raise ValueError("counts must be a [functions, minutes] matrix with >= 1 minute")
        n = counts.shape[0]
        if not (len(self.owners) == len(self.apps) == len(self.functions)
                == len(self.triggers) == n):
            raise ValueError("owners, apps, functions and triggers need one entry per row")
        if counts.size and (not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0):
            raise ValueError("counts must be non-negative integers")
        object.__setattr__(self, "counts", counts.astype(np.int64))

    @property
    def n_minutes(self) -> int:
        return int(self.counts.shape[1])

    def to_csv(self) -> str:
        lines = [",".join([*MINUTE_HEADER, *(str(m + 1) for m in range(self.n_minutes))])]
        for i, row in enumerate(self.counts):
            lines.append(",".join([self.owners[i], self.apps[i], self.functions[i],
                                   self.triggers[i], *map(str, row.tolist())]))
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> str:
        """Write in the public CSV layout; returns the file's sha256."""
        data = self.to_csv().encode()
        Path(path).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def to_arrivals(self, top_n: int | None = None, minute_range: tuple[int, int] | None = None,
                    time_scale: float = 1.0, target_names: TargetNames = None,
                    spacing: str = "uniform", cv: float = 1.0, seed: int = 0,
                    name: str | None = None) -> Arrivals:
        a, b = window(minute_range, self.n_minutes)
        scale = positive_scale(time_scale)
        counts = self.counts[:, a:b]
        order, names = select(self.apps, self.functions, counts.sum(axis=1), top_n,
                               target_names)
        targets, fn_target = index_targets(names)
        rows, minute, frac = spread_counts(counts[order], np.random.default_rng(seed),
                                           spacing, cv)
        # a request stays in its own minute whatever the rounding of (minute + frac)·60·scale
        m = minute.astype(np.float64)
        t = np.minimum((m + frac) * 60.0 * scale, np.nextafter((m + 1.0) * 60.0 * scale, 0.0))
        sort = np.argsort(t, kind="stable")
        params: dict[str, Any] = {
            "source": Path(self.source).name, "source_sha256": self.source_sha256,
            "format": "azure-2019-minute-counts", "top_n": top_n, "minute_range": [a, b],
            "time_scale": scale, "spacing": spacing, "cv": cv,
            "functions": {f"{self.apps[i]}/{self.functions[i]}": n
                          for i, n in zip(order.tolist(), names, strict=True)}}
        meta = {"name": name or f"azure2019-{Path(self.source).stem or 'trace'}-m{a}-{b}",
                "kind": "azure-minutes", "seed": int(seed), "parameters": params,
                "duration_s": (b - a) * 60.0 * scale}
        return Arrivals(t[sort], fn_target[rows[sort]], targets, meta)


def read_minute_counts(path: str | Path) -> MinuteTrace:
    """Parse a 2019-layout file; a malformed one raises ValueError naming line and column."""
    p = Path(path)
    owners: list[str] = []
    apps: list[str] = []
    funcs: list[str] = []
    trigs: list[str] = []
    rows: list[np.ndarray] = []
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{p}: empty file (expected the header "
                                 f"{','.join(MINUTE_HEADER)},1,...,1440)")
            for j, want in enumerate(MINUTE_HEADER):
                got = header[j] if j < len(header) else "<missing>"
                if got.strip() != want:
                    raise bad(p, 1, f"column {j + 1} of the header must be {want!r}, got "
                                     f"{got!r}")
            if len(header) == len(MINUTE_HEADER):
                raise bad(p, 1, "the header has no minute columns (1, 2, ...)")
            for j, got in enumerate(header[len(MINUTE_HEADER):]):
                if got.strip() != str(j + 1):
                    raise bad(p, 1, f"column {j + 5} of the header must be minute "
                                     f"{str(j + 1)!r}, got {got!r}")
            width = len(header)
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if len(fields) != width:
                    raise bad(p, line, f"expected {width} fields, got {len(fields)}")
                for j in range(4):
                    if not fields[j].strip():
                        raise bad(p, line, f"column {j + 1} ({MINUTE_HEADER[j]}) is empty")
                rows.append(_parse_counts(p, line, fields[4:]))
                owners.append(fields[0].strip())
                apps.append(fields[1].strip())
                funcs.append(fields[2].strip())
                trigs.append(fields[3].strip())
    except OSError as e:
        raise ValueError(f"{p}: cannot read trace: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{p}: not a text CSV file: {e}") from None
    if not rows:
        raise ValueError(f"{p}: the trace has a header but no function rows")
    return MinuteTrace(tuple(owners), tuple(apps), tuple(funcs), tuple(trigs),
                       np.vstack(rows), source=str(p), source_sha256=sha256_file(p))


def _parse_counts(p: Path, line: int, fields: list[str]) -> np.ndarray:
    try:
        row = np.array(fields, dtype=np.int64)
        if row.min() >= 0:
            return row
    except (ValueError, OverflowError):
        pass
    for j, v in enumerate(fields):
        try:
            ok = int(v) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise bad(p, line, f"column {j + 5} (minute {j + 1}) must be a non-negative "
                                f"integer count, got {v!r}")
    raise bad(p, line, "unparseable counts")  # pragma: no cover - numpy and int() disagree



def load_azure(path: str | Path, **options: Any) -> Arrivals:
    """Read either layout (told apart by its header) and replay it as arrivals."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError as e:
        raise ValueError(f"{p}: cannot read trace: {e.strerror or e}") from None
    if first.startswith("HashOwner"):
        return read_minute_counts(p).to_arrivals(**options)
    if first.startswith("app,"):
        # per-invocation times need no spreading within a minute
        spacing, cv = options.pop("spacing", "uniform"), options.pop("cv", 1.0)
        options.pop("seed", None)
        if spacing != "uniform" or cv != 1.0:
            raise ValueError(f"{p}: spacing/cv apply to per-minute counts; this per-invocation "
                             "trace has exact times")
        return read_invocations(p).to_arrivals(**options)
    raise ValueError(f"{p}: line 1: not an Azure Functions trace header (expected "
                     f"'{','.join(MINUTE_HEADER)},1,...' or '{','.join(INVOCATION_HEADER)}')")
