"""The live MiniLM pipeline for calibration and validation: deploy, call, tear down.

Deployed exactly as ``benchmark.studies.pipeline_overhead`` does (its ``stack_file``:
three ``quart-python`` functions over a 3-stage partition, 1 torch thread,
``max_inflight`` 8), through ``local_provider.deploy.up`` on free ports with a
private state directory, so nothing of a running demo is touched.  Requests
carry ``pipeline_overhead.SENTENCES`` (8 sentences by default), the same body
for calibration and validation.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmark.studies.pipeline_overhead import SENTENCES, stack_file
from contracts import server_timing
from local_provider import deploy, services

REPO = Path(__file__).resolve().parents[2]
CACHED = REPO / ".quart" / "models" / "minilm-3"
STAGES = 3


@dataclass(frozen=True)
class LivePipeline:
    gateway: str
    auth: tuple[str, str]
    functions: tuple[str, ...]
    model_dir: Path
    state: Path

    @property
    def url(self) -> str:
        return f"{self.gateway}/function/{self.functions[0]}"

    def replica_pids(self, function: str | None = None) -> list[int]:
        """Pids of the serving replicas (of one function, or all), as the provider lists
        them (zygotes excluded)."""
        r = requests.get(f"{self.gateway}/system/quart/stats", auth=self.auth, timeout=10)
        r.raise_for_status()
        stats = r.json()
        return sorted(i["pid"] for f in self.functions if function in (None, f)
                      for i in stats.get(f, {}).get("instances", []) if "pid" in i)

    def gateway_pids(self) -> list[int]:
        """The gateway + provider process this deployment started, and the supervisor that
        restarts it (``local_provider/supervisor.py``): the server is the supervisor's
        child, so the recorded pid alone would count none of the gateway's CPU."""
        return descendants([svc.pid for svc in services.recorded(self.state)
                            if svc.name == "gateway"], depth=1)

    def prioritise(self, nice: int) -> int:
        """Gateway, replicas and this process (the load generator) at priority ``nice``."""
        return prioritise(self.gateway_pids() + self.replica_pids() + [os.getpid()], nice)

    def scale(self, replicas: int) -> None:
        for name in self.functions:
            r = requests.post(f"{self.gateway}/system/scale-function/{name}", auth=self.auth,
                              json={"serviceName": name, "replicas": replicas}, timeout=10)
            r.raise_for_status()
        deploy.wait_available(self.gateway, self.auth, dict.fromkeys(self.functions, replicas))


def body(inputs: int = 8) -> bytes:
    texts = (SENTENCES * (inputs // len(SENTENCES) + 1))[:inputs]
    return json.dumps({"inputs": texts}).encode()


def stage_times(header: str | None) -> list[float]:
    """Seconds per stage from ``Server-Timing: stage0;dur=12.3, stage1;dur=...``."""
    return [seconds for _, seconds in server_timing.parse(header)]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (their threads included), from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def descendants(pids: list[int], depth: int | None = None) -> list[int]:
    """``pids`` and the processes below them, ``depth`` generations down (all without it),
    from ``/proc/*/stat``'s parent field."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [(p, 0) for p in pids]
    while todo:
        pid, level = todo.pop()
        out.append(pid)
        if depth is None or level < depth:
            todo.extend((c, level + 1) for c in children.get(pid, []))
    return out


def prioritise(pids: list[int], nice: int) -> int:
    """Give every thread of ``pids`` the CPU priority ``nice`` (-20 .. 19), and their
    scheduler autogroups too; returns how many threads were changed.

    Why: on a shared machine other programs' threads take their CFS share of the cores
    and make a measurement of *this* pipeline a measurement of the neighbours.  At nice
    -20 a thread weighs 88761 against 1024 for a nice-0 one (kernel/sched/core.c,
    ``sched_prio_to_weight``), so ten busy neighbours take about 10 % instead of 80 %.
    Linux applies ``setpriority`` to single threads, hence the walk over
    ``/proc/<pid>/task``; threads started later inherit their creator's value.  Lowering
    a nice value needs root (``PermissionError`` otherwise).

    With ``kernel.sched_autogroup_enabled`` (this machine: 1) a thread's nice counts only
    against threads of its own session; sessions share the cores by their *autogroup's*
    nice, 0 for all by default, so every other session's busy threads still took an
    equal share: a validation on 2 cores beside three CPU-bound sessions stalled for
    seconds although its threads were at -20.  So the autogroup of each process is set
    too (``/proc/<pid>/autogroup``, sched(7)); this process's own autogroup (the
    caller's session, which outlives it) is put back at exit.
    """
    _autogroups(pids, nice)
    n = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                n += 1
            except ProcessLookupError:
                continue
    return n


def _autogroup(pid: int) -> tuple[str, int] | None:
    """(group name, nice) of ``pid``'s autogroup, or None without autogroups."""
    try:
        name, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
        return name, int(nice)
    except (OSError, ValueError):
        return None


def _autogroups(pids: list[int], nice: int) -> None:
    done: set[str] = set()
    own = _autogroup(os.getpid())
    for pid in pids:
        g = _autogroup(pid)
        if g is None or g[0] in done:
            continue
        done.add(g[0])
        if own is not None and g[0] == own[0]:
            atexit.register(_set_autogroup, os.getpid(), own[1])
        _set_autogroup(pid, nice)


def _set_autogroup(pid: int, nice: int) -> None:
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        pass  # gone, or not allowed: the threads' own nice still applies within it


@contextlib.contextmanager
def deployed(say=print) -> Iterator[LivePipeline]:
    tmp = Path(tempfile.mkdtemp(prefix="quart-sim-live-"))
    state = tmp / "state"
    gw, pv, mp, kp = (services.free_port() for _ in range(4))
    gateway = f"http://127.0.0.1:{gw}"
    old = os.environ.get("QUART_GATEWAY_URL")
    os.environ["QUART_GATEWAY_URL"] = gateway
    try:
        if (CACHED / "manifest.json").is_file():
            model_dir = CACHED
        else:
            from functions.partitioner import partition

            model_dir = tmp / "minilm-3"
            say(f"partitioning all-MiniLM-L6-v2 into {STAGES} stages at {model_dir}")
            partition(model_dir, STAGES, model="all-MiniLM-L6-v2")
        stack = stack_file(tmp, model_dir, STAGES, 1)
        deploy.up(str(stack), gateway, state, "", say=lambda s: None, provider_port=pv,
                  metrics_port=mp, keys_metrics_port=kp)
        auth = (deploy.USER, deploy.password_file(state).read_text().strip())
        yield LivePipeline(gateway, auth, tuple(f"bench{STAGES}-stage-{i}"
                                                for i in range(STAGES)), model_dir, state)
    finally:
        deploy.down(state, say=lambda s: None)
        if old is None:
            os.environ.pop("QUART_GATEWAY_URL", None)
        else:
            os.environ["QUART_GATEWAY_URL"] = old
        shutil.rmtree(tmp, ignore_errors=True)
