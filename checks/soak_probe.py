"""What the soak observes: which pid is which component, their memory, replicas, /dev/shm.

Every figure comes from the running system, never from what the soak
believes it started: the gateway/provider, plugin, Redis and Prometheus pids
from the service records ``quart-faas up`` writes (``<state>/run/*.json``),
the keys_manager agent from its own socket (``ping``), its zygotes from its
``status``, and the replicas from the provider's ``GET /system/quart/stats``.
A component restarted during the run therefore shows its new pid.

Memory is read from ``/proc/PID/smaps_rollup`` (benchmark.procmem): RSS as
asked, and PSS beside it, because replicas forked from one zygote share the
weights' pages and RSS counts them once per replica.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from benchmark import procmem
from keys_manager.client import AgentError, call
from keys_manager.config import AgentConfig
from keys_manager.procs import start_time
from local_provider import services

SHM = Path("/dev/shm")
SERVICES = ("gateway", "plugin", "prometheus", "redis")  # records of `quart-faas up`


@dataclass
class Target:
    """Where one fresh deployment answers (all on free ports) and how to restart its parts."""

    state_dir: Path
    gateway: str
    metrics: str
    prometheus: str
    keys_metrics: str
    redis_url: str
    plugin_port: int
    plugin_env: dict[str, str]
    auth: tuple[str, str]
    names: list[str]

    @property
    def plugin(self) -> str:
        return f"http://127.0.0.1:{self.plugin_port}"

    @property
    def keys_socket(self) -> Path:
        return (Path(self.state_dir) / "keys_manager.sock").absolute()

    @property
    def shm_dir(self) -> Path:
        """keys_manager's T1 directory for this state dir (the agent derives it the same way)."""
        return AgentConfig.from_env({"QUART_STATE_DIR": str(Path(self.state_dir).absolute())}
                                    ).shm_dir


def service_pid(t: Target, name: str) -> int | None:
    """The recorded pid of a service, if that process still runs."""
    for svc in services.recorded(t.state_dir):
        if svc.name == name and services.pid_alive(svc.pid):
            return svc.pid
    return None


def agent_status(t: Target, timeout_s: float = 3.0) -> dict[str, Any] | None:
    try:
        return call(t.keys_socket, {"op": "status"}, timeout_s=timeout_s)["status"]
    except AgentError:
        return None


def stats(t: Target, session: requests.Session | None = None) -> dict[str, Any] | None:
    try:
        r = (session or requests).get(f"{t.gateway}/system/quart/stats", auth=t.auth, timeout=3)
        return r.json() if r.ok else None
    except (requests.RequestException, ValueError):
        return None


def components(t: Target) -> dict[str, list[int]]:
    """component -> pids: one each for the long-running ones, every zygote, every replica."""
    out: dict[str, list[int]] = {}
    for name in SERVICES:
        pid = service_pid(t, name)
        out[name] = [pid] if pid else []
    st = agent_status(t)
    out["keys_manager"] = [int(st["pid"])] if st else []
    for z in (st or {}).get("zygotes", []):
        if z.get("alive"):
            out[f"zygote:{z['function']}"] = [int(z["pid"])]
    s = stats(t) or {}
    out["replicas"] = sorted(int(i["pid"]) for f in s.values() for i in f.get("instances", [])
                             if i.get("pid"))
    return out


def memory(t: Target) -> dict[str, dict[str, Any]]:
    """component -> {pids, n, rss, pss, per_pid rss} in bytes (replicas summed); a pid gone
    meanwhile is skipped."""
    snap: dict[str, dict[str, Any]] = {}
    for comp, pids in components(t).items():
        rss = pss = 0
        per: dict[int, int] = {}
        for pid in pids:
            try:
                r = procmem.rollup(pid)
            except (OSError, KeyError):
                continue
            rss, pss = rss + r.get("Rss", 0), pss + r.get("Pss", 0)
            per[pid] = r.get("Rss", 0)
        snap[comp] = {"pids": list(per), "n": len(per), "rss": rss, "pss": pss, "per_pid": per}
    return snap


def shm_entries() -> set[str]:
    """Names directly under /dev/shm (every owner: other sessions may share the machine)."""
    try:
        return {p.name for p in SHM.iterdir()}
    except OSError:
        return set()


def shm_files(d: Path) -> list[str]:
    """Files left in one keys_manager T1 directory (empty list when the directory is gone)."""
    if not d.exists():
        return []
    try:
        return [str(d)] + sorted(str(p) for p in d.rglob("*"))
    except OSError:
        return [str(d)]


@dataclass
class Seen:
    function: str
    pid: int
    tier: str
    first_s: float
    last_s: float
    zygote_pid: int | None = None
    gone_s: float | None = None


@dataclass
class Tracker:
    """Samples the provider's stats: replicas created/destroyed (by pid), desired and ready
    per stage, and the agent's zygotes, every ``every_s`` seconds in a thread."""

    t: Target
    t0: float
    every_s: float = 0.5
    replicas: dict[int, Seen] = field(default_factory=dict)
    zygotes: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (fn, first)
    agents: dict[int, float] = field(default_factory=dict)
    starts: dict[int, int | None] = field(default_factory=dict)  # pid -> start time (ticks)
    initial: set[int] = field(default_factory=set)  # replicas already there at the first sample
    timeline: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    misses: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-tracker", daemon=True)
        self._session = requests.Session()

    def start(self) -> Tracker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self) -> None:
        now = time.perf_counter() - self.t0
        s = stats(self.t, self._session)
        if s is None:
            self.misses += 1
            return
        live: set[int] = set()
        row: dict[str, Any] = {"t": round(now, 2)}
        for fn, f in s.items():
            row[fn] = {"desired": f.get("replicas", 0), "ready": f.get("availableReplicas", 0),
                       "queue": f.get("queueDepth", 0)}
            for i in f.get("instances", []):
                pid = i.get("pid")
                if not pid:
                    continue
                live.add(pid)
                seen = self.replicas.get(pid)
                if seen is None or seen.gone_s is not None:
                    self.replicas[pid] = Seen(fn, pid, str(i.get("tier") or ""), now, now,
                                              i.get("zygote_pid"))
                    self.starts[pid] = start_time(pid)
                    if not self.timeline:
                        self.initial.add(pid)
                else:
                    seen.last_s = now
        for seen in self.replicas.values():
            if seen.gone_s is None and seen.pid not in live:
                seen.gone_s = now
        st = agent_status(self.t, timeout_s=1.0)
        if st:
            if int(st["pid"]) not in self.agents:
                self.agents[int(st["pid"])] = now
                self.starts[int(st["pid"])] = start_time(int(st["pid"]))
            for z in st.get("zygotes", []):
                if z.get("alive") and int(z["pid"]) not in self.zygotes:
                    self.zygotes[int(z["pid"])] = (z["function"], now)
                    self.starts[int(z["pid"])] = start_time(int(z["pid"]))
        self.last = s
        self.timeline.append(row)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a missed sample is a gap, not a failed soak
                self.misses += 1
            self._stop.wait(self.every_s)

    def summary(self) -> dict[str, Any]:
        """Created/destroyed per function, and how the new replicas were made (tier)."""
        per: dict[str, dict[str, Any]] = {}
        for s in self.replicas.values():
            d = per.setdefault(s.function, {"initial": 0, "created": 0, "destroyed": 0,
                                            "tiers": {}})
            if s.pid in self.initial:
                d["initial"] += 1
            else:
                d["created"] += 1
                d["tiers"][s.tier] = d["tiers"].get(s.tier, 0) + 1
            d["destroyed"] += s.gone_s is not None
        return per

    def leftovers(self) -> dict[str, list[int]]:
        """Processes of the run that still exist (same pid *and* start time: pids are
        recycled), by kind; call after ``down``."""
        kinds: dict[str, Iterable[int]] = {"replicas": self.replicas, "zygotes": self.zygotes,
                                           "keys_manager": self.agents}
        return {k: sorted(p for p in pids if self.starts.get(p) is not None
                          and start_time(p) == self.starts[p])
                for k, pids in kinds.items()}
