"""Processes the keys_manager starts but may not be the parent of: zygotes and replicas.

Why pid + start time: after a keys_manager restart the zygotes and replicas
it had started are orphans (re-parented to init), so ``waitpid`` is not an
option; a pid alone could have been reused, the pair (pid, start time in
clock ticks since boot) cannot.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot), None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    return started is not None and start_time(pid) == started


def terminate(pid: int, started: int | None, grace_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace_s``; True when the process is gone."""
    if not alive(pid, started):
        return True
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not alive(pid, started):
            return True
    return False


@dataclass
class Proc:
    """What ``state.json`` remembers of a process, so a restarted agent can adopt it."""

    kind: str  # "zygote" or "replica"
    function: str
    pid: int
    started: int | None
    url: str = ""
    sock: str = ""  # zygote: its Unix socket
    key: str = ""  # zygote: configuration hash; replica: its zygote's key ("" if plain)
    stage: str = ""  # StageKey string when the function is a model stage
    segment: str = ""  # the T1 segment id the process mapped
    tier: str = ""
    spawn_ms: float = 0.0
    zygote_pid: int = 0
    index: int = 0
    log: str = ""
    pooled: bool = False  # a replica handed over from the warm pool (keys_manager/pool.py)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False  # our child and reaped (poll() also clears the zombie)
        return alive(self.pid, self.started)

    def terminate(self, grace_s: float) -> bool:
        gone = terminate(self.pid, self.started, grace_s)
        if self.popen is not None:
            try:
                self.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return gone

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "popen"}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Proc:
        names = set(cls.__dataclass_fields__) - {"popen"}
        return cls(**{k: v for k, v in d.items() if k in names})
