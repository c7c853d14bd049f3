"""``limits.cpu`` applied to replica processes as a CFS quota (cgroup v2 or v1).

Why: CPU compensation (the plugin's third policy) changes a function's
``limits.cpu`` through ``PUT /system/functions`` and expects it to bite, as
it does for a container on faas-netes.  Here a replica is a process, so each
replica gets its own cgroup with ``quota = cpu * period`` (the Kubernetes
meaning of a CPU limit: that many CPUs' worth of time per period), and a
limit change rewrites the quota in place; the replica keeps running.

Where no cgroup hierarchy is writable (an unprivileged container, a
read-only /sys/fs/cgroup), ``available`` is False with the reason, the
provider says so in ``GET /system/quart/capabilities``, and limits stay
metadata only.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from contracts.quantity import parse_cpu

__all__ = ["PERIOD_US", "CpuLimiter", "cpus_of", "parse_cpu"]

log = logging.getLogger("local_provider.cpulimit")
PERIOD_US = 100_000
Wanted = dict[tuple[str, int], tuple[int, float | None]]


def cpus_of(limits: Any) -> float | None:
    """A deployment's limits.cpu in CPUs (None: no limit)."""
    try:
        return parse_cpu(limits.cpu) if limits else None
    except ValueError:
        return None  # refused at deploy time; never reached


def wanted_quotas(recs: Iterable[Any]) -> dict[tuple[str, int], tuple[int, float | None]]:
    """limits.cpu of each function (registry records) for each of its live replicas (per
    replica, as a container limit is on faas-netes)."""
    want = {}
    for rec in recs:
        lim = rec.deployment.limits
        try:
            cpus = parse_cpu(lim.cpu) if lim else None
        except ValueError:
            cpus = None  # refused at deploy time; never reached
        with rec.pool.cond:
            for r in rec.pool.replicas:
                if r.handle is not None and not r.dead:
                    want[(rec.name, r.index)] = (r.handle.pid, cpus)
    return want


def _writable_dir(p: Path) -> bool:
    return p.is_dir() and os.access(p, os.W_OK)


class CpuLimiter:
    """One cgroup per replica under ``<root>/<group>/<function>/<index>``."""

    def __init__(self, group: str, root: Path = Path("/sys/fs/cgroup")) -> None:
        self.mode, self.base, self.reason = "", None, ""
        self._lock = threading.Lock()
        self._assigned: dict[tuple[str, int], tuple[int, float | None]] = {}
        v2 = root / "cgroup.controllers"
        if v2.is_file() and "cpu" in v2.read_text().split() and _writable_dir(root):
            self.mode, parent = "v2", root
        elif _writable_dir(root / "cpu") and (root / "cpu" / "cpu.cfs_quota_us").exists():
            self.mode, parent = "v1", root / "cpu"
        else:
            self.reason = (f"no writable cgroup cpu controller under {root} (cgroup v2 with the "
                           f"cpu controller, or v1 cpu): limits.cpu is recorded, not enforced")
            return
        base = parent / group
        try:
            base.mkdir(exist_ok=True)
            if self.mode == "v2":
                (base / "cgroup.subtree_control").write_text("+cpu")
            self.base = base
        except OSError as e:
            self.mode, self.reason = "", f"cannot create {base}: {e}; limits.cpu not enforced"

    @property
    def available(self) -> bool:
        return self.base is not None

    def describe(self) -> dict[str, object]:
        return {"available": self.available, "cgroup": self.mode or None,
                "path": str(self.base) if self.base else None, "reason": self.reason}

    def _dir(self, function: str, index: int) -> Path:
        assert self.base is not None
        return self.base / function / str(index)

    def place(self, function: str, index: int, pid: int, cpus: float | None) -> None:
        """Put one new replica in its cgroup now, before it is ready: its limit is in force
        from its first call (a container's is from its start), not from the next tick."""
        if self.base is None:
            return
        with self._lock:
            self._place(function, index, pid, cpus)

    def sync(self, want: Wanted | Callable[[], Wanted]) -> None:
        """Make the cgroups match ``{(function, index): (pid, cpus)}``: new replicas are
        placed, changed quotas rewritten in place, cgroups of gone replicas removed.
        Idempotent, so the reconcile loop calls it every tick.

        ``want`` may be a function, called under the lock: concurrent callers (the loop and
        a kick) then apply what they saw in the order they saw it, so an older view never
        undoes a newer one (a quota written back to its old value, a new replica forgotten)."""
        if self.base is None:
            return
        with self._lock:
            if callable(want):
                want = want()
            for (fn, idx), (pid, cpus) in want.items():
                self._place(fn, idx, pid, cpus)
            for key in [k for k in self._assigned if k not in want]:
                del self._assigned[key]
                for d in (self._dir(*key), self.base / key[0]):
                    try:
                        d.rmdir()
                    except OSError:
                        break  # a process is still inside, or sibling replicas remain

    def _place(self, fn: str, idx: int, pid: int, cpus: float | None) -> None:
        if self._assigned.get((fn, idx)) == (pid, cpus):
            return
        d = self._dir(fn, idx)
        try:
            d.parent.mkdir(exist_ok=True)
            if self.mode == "v2":
                (d.parent / "cgroup.subtree_control").write_text("+cpu")
            d.mkdir(exist_ok=True)
            self._write_quota(d, cpus)
            (d / "cgroup.procs").write_text(str(pid))
            self._assigned[(fn, idx)] = (pid, cpus)
            log.info("cpu limit of %s #%d (pid %d): %s", fn, idx, pid,
                     "none" if cpus is None else f"{cpus:g} CPU")
        except OSError as e:
            log.warning("cpu limit of %s #%d (pid %d) not applied: %s", fn, idx, pid, e)

    def _write_quota(self, d: Path, cpus: float | None) -> None:
        quota = -1 if cpus is None else max(1000, round(cpus * PERIOD_US))
        if self.mode == "v2":
            (d / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
        else:
            (d / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (d / "cpu.cfs_quota_us").write_text(str(quota))

    def quota(self, function: str, index: int) -> float | None:
        """The quota in force, in CPUs (None: unlimited or not managed)."""
        if self.base is None:
            return None
        d = self._dir(function, index)
        try:
            if self.mode == "v2":
                q, p = (d / "cpu.max").read_text().split()
                return None if q == "max" else int(q) / int(p)
            us = int((d / "cpu.cfs_quota_us").read_text())
            return None if us < 0 else us / int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None

    def close(self, wait_s: float = 3.0) -> None:
        """Remove every cgroup we made; a process that is still exiting keeps its cgroup
        busy (EBUSY) for a moment, so retry until ``wait_s``."""
        if self.base is None:
            return
        deadline = time.monotonic() + wait_s
        while True:
            dirs = sorted((p for p in self.base.rglob("*") if p.is_dir()),
                          key=lambda p: -len(p.parts)) + [self.base]
            busy = []
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    busy.append((d, e))
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        for d, err in busy:
            log.warning("cgroup %s not removed: %s", d, err)
