"""Memory of a process as the kernel accounts it, from ``/proc/PID/smaps_rollup``.

Why PSS: RSS counts every shared page in full in every process that maps it,
so five replicas forked from one zygote would look like five copies of the
weights.  The proportional set size divides each page by the number of
processes mapping it, so the PSS of a group of processes sums to the memory
the group really uses, and the growth of that sum is the cost of a replica.
"""
from __future__ import annotations

from pathlib import Path


def rollup(pid: int) -> dict[str, int]:
    """Every ``Name: N kB`` field of smaps_rollup, in bytes; OSError when the process is gone."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[name] = int(parts[0]) * 1024
    return out


def pss_bytes(pid: int) -> int:
    return rollup(pid)["Pss"]


def group(pids: list[int]) -> dict[str, dict[str, int]]:
    """Pss and Rss (bytes) per pid, plus their ``total``; a pid gone meanwhile raises OSError."""
    per = {str(p): {k: v for k, v in rollup(p).items() if k in ("Pss", "Rss")} for p in pids}
    per["total"] = {k: sum(d[k] for d in per.values()) for k in ("Pss", "Rss")}
    return per
