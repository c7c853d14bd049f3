"""One system, one workload, for real: deploy, drive, sample, tear down.

Every system gets a fresh deployment of the same stack (fresh state
directory, so the same cache tiers at the start) on free ports, the same
warm-up, and the same arrivals sent open-loop (``benchmark/openloop.py``:
latency is measured from each request's planned send time, so a slow system
cannot slow the load down and hide its queueing).  Quart runs as the real
plugin process (Redis and all); the baselines run through
:class:`~benchmark.live.driver.BaselineDriver`, whose first decision comes when the
simulator's would, counted from the first arrival (``first_decision_s``).

A system's ``scaleup`` decides the launcher: ``fork`` is keys_manager's T0
fork (Quart ships it), ``cold`` is a fresh process that imports torch and
loads its stage (what a new container on stock OpenFaaS does), so the
baselines pay the cold start their platforms pay.  ``same_launcher`` gives
every system fork scale-up instead, to compare the policies alone.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmark import openloop
from benchmark.live import plugin_report
from benchmark.live.driver import BaselineDriver
from benchmark.results import RunResult, TimelineRow
from benchmark.systems.base import Autoscaler, Bounds
from contracts.names import LABEL_SCALE_MAX
from gateway_plugin.actuate import Gateway
from local_provider import deploy, plugin_services, services

SENTENCES = [
    "Serverless platforms scale functions with the load.",
    "A large model is cut into stages that run as a pipeline.",
    "Bursts travel down the pipeline from stage to stage.",
    "Copy-on-write forking makes a new replica cheap.",
]

# The plugin's own switches for Quart's ablations (gateway_plugin/config.py).
QUART_ENV: dict[str, dict[str, str]] = {
    "quart-mmc": {"QUART_KP": "0", "QUART_KI": "0", "QUART_KD": "0", "QUART_SMOOTHING": "0",
                  "QUART_CPU_COMPENSATION": "0"},
    "quart-pid": {"QUART_SMOOTHING": "0", "QUART_CPU_COMPENSATION": "0"},
    "quart-smooth": {"QUART_CPU_COMPENSATION": "0"},
    "quart": {},
    "quart-nofork": {},
}


@dataclass
class LiveConfig:
    stack_file: str = "stack.yml"
    pipeline: str = "minilm"
    state_dir: Path = Path(".quart/compare")
    slo_s: float = 0.5
    bounds: Bounds = field(default_factory=lambda: Bounds(1, 5))  # the stack's CE cap
    quart_period_s: float = 2.0
    sample_s: float = 1.0
    drain_s: float = 6.0
    inputs: int = 4
    same_launcher: bool = False
    timeout_s: float = 60.0
    nice: int = 0  # CPU priority of the deployment and the load generator (0: as is)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the rig's QUART_EMU_*


class LiveError(RuntimeError):
    pass


def _meminfo() -> float:
    """Node memory in use / total, as a fraction (MemAvailable, like `free`)."""
    vals = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        vals[k] = float(v.split()[0])
    return 1.0 - vals["MemAvailable"] / vals["MemTotal"]


def _gauges(metrics_url: str) -> dict[str, dict[str, float]]:
    """quart_function_{inflight,queue_depth} per function from the gateway's /metrics."""
    out: dict[str, dict[str, float]] = {}
    text = requests.get(f"{metrics_url}/metrics", timeout=2).text
    for line in text.splitlines():
        for key, metric in (("inflight", "quart_function_inflight{"),
                            ("queue", "quart_function_queue_depth{")):
            if line.startswith(metric):
                name = line.split('function_name="', 1)[1].split('"', 1)[0].split(".")[0]
                out.setdefault(name, {})[key] = float(line.rsplit(" ", 1)[1])
    return out


class Sampler:
    """Replicas desired/ready, queue and in-flight per stage, once per ``every_s``."""

    def __init__(self, gateway: str, metrics: str, auth: tuple[str, str], every_s: float,
                 on_sample: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.gateway, self.metrics, self.auth, self.every_s = gateway, metrics, auth, every_s
        self.rows: list[tuple[float, str, int, int, float, float, float]] = []
        self.on_sample = on_sample
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, t0: float) -> Sampler:
        self.t0 = t0
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        s = requests.Session()
        while not self._stop.is_set():
            try:
                fs = s.get(f"{self.gateway}/system/functions", auth=self.auth, timeout=2).json()
                g = _gauges(self.metrics)
                mem = _meminfo()
                t = time.time() - self.t0
                snap = {}
                for f in fs:
                    name = f["name"]
                    q = g.get(name, {})
                    self.rows.append((t, name, int(f.get("availableReplicas", 0)),
                                      int(f.get("replicas", 0)), q.get("queue", 0.0),
                                      q.get("inflight", 0.0), mem))
                    snap[name] = int(f.get("availableReplicas", 0))
                if self.on_sample:
                    self.on_sample(snap)
            except (requests.RequestException, ValueError, KeyError, IndexError):
                pass  # a missed sample is a gap in the timeline, not a failed run
            self._stop.wait(self.every_s)

    def timeline(self) -> list[TimelineRow]:
        return [TimelineRow(t, name, ready, desired, queue, inflight, None, mem)
                for t, name, ready, desired, queue, inflight, mem in self.rows]


def ensure_partition(stack_file: str, say: Callable[[str], None]) -> None:
    """Cut the model the stack's first function serves if its partition is missing."""
    from contracts.stack import load_stack
    from functions.partitioner import partition

    stack = load_stack(stack_file)
    env = stack.functions[next(iter(stack.functions))].environment
    model_dir = stack.root / env.get("QUART_MODEL_DIR", ".quart/models/minilm-3")
    if not (model_dir / "manifest.json").exists():
        say(f"partitioning {env.get('QUART_MODEL')} into {env.get('QUART_STAGES')} stages "
            f"-> {model_dir}")
        partition(model_dir, int(env.get("QUART_STAGES", "3")),
                  model=env.get("QUART_MODEL", "all-MiniLM-L6-v2"))


def prioritise_deployment(state_dir: Path, nice: int) -> int:
    """Every process of the deployment (gateway, keys_manager and its zygotes, plugin,
    Prometheus, Redis, replicas) and this one at priority ``nice``; replicas started
    later are forked or spawned by them and inherit it.  Why: on a shared machine other
    programs' threads would otherwise take their CFS share of the cores from the run
    (``benchmark.sim.livepipe.prioritise``)."""
    from benchmark.sim.livepipe import descendants, prioritise

    roots = [svc.pid for svc in services.recorded(state_dir)]
    return prioritise(descendants(roots) + [os.getpid()], nice)


class Renicer:
    """Keeps the deployment at ``nice`` while it runs: every replica is a session of its
    own (keys_manager and the provider start them with ``setsid``), so a replica started
    during the run gets an autogroup at nice 0; this puts it at ``nice`` within
    ``every_s``."""

    def __init__(self, state_dir: Path, nice: int, every_s: float = 0.5) -> None:
        self.state_dir, self.nice, self.every_s = state_dir, nice, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="renicer", daemon=True)

    def start(self) -> Renicer:
        prioritise_deployment(self.state_dir, self.nice)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            prioritise_deployment(self.state_dir, self.nice)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


OPENLOOP_LEAD_S = 0.05  # openloop.run's first offset counts from 50 ms after the call
LOCAL_SCRAPE_S = 1.0  # local_provider/deploy.py's Prometheus


def first_decision_s(system: Autoscaler, scrape_s: float = LOCAL_SCRAPE_S) -> float:
    """When a baseline first decides, from the first arrival: as the simulator schedules
    it (``benchmark/sim/engine.py``: one period, then half a scrape interval, or half a
    period for a system on its own meter), so that live and simulated runs put the
    system's clocks (CE's 15 s rule evaluations and 40 s re-notifications, the windows)
    at the same phase of the same bursts.  Started at deployment instead, a baseline's
    clocks ran from several seconds before the load, by how long the deployment and the
    warm-up took: live CE first scaled 26 s later than simulated on the same arrivals."""
    period = float(system.period_s)
    own_meter = getattr(system, "reads_concurrency", False)
    return period + (period if own_meter else min(scrape_s, period)) / 2


def _launcher(system: Autoscaler, cfg: LiveConfig) -> str:
    return "fork" if cfg.same_launcher or system.scaleup == "fork" else "process"


# size: one live run in the order it happens (deploy, load, teardown); reworked on branch simval
def run_live(arrivals: Any, system: Autoscaler, cfg: LiveConfig,
             target: str | None = None, say: Callable[[str], None] = lambda m: None,
             on_update: Callable[..., None] | None = None) -> RunResult:
    """Deploy ``cfg.stack_file`` fresh, run ``system`` under ``arrivals``, tear down."""
    target = target or arrivals.targets[0]
    offsets = np.asarray(arrivals.for_target(target), dtype=float)
    if len(offsets) == 0:
        raise LiveError(f"the workload sends nothing to {target!r}")
    sdir = Path(cfg.state_dir) / system.name
    if sdir.exists():
        deploy.down(sdir, say=lambda m: None)
        shutil.rmtree(sdir)
    sdir.mkdir(parents=True)
    ports = [services.free_port() for _ in range(6)]
    gateway = f"http://127.0.0.1:{ports[0]}"
    launcher = _launcher(system, cfg)
    saved = {k: os.environ.get(k) for k in ("QUART_LAUNCHER", *cfg.extra_env)}
    os.environ.update(cfg.extra_env)
    os.environ["QUART_LAUNCHER"] = launcher
    start_iso = datetime.now(UTC).isoformat(timespec="seconds")
    driver: BaselineDriver | None = None
    renicer: Renicer | None = None
    plugin_url, report = "", None
    finished = False
    try:
        stack, ep = deploy.up(cfg.stack_file, gateway, sdir, f"http://127.0.0.1:{ports[1]}",
                              say=say, provider_port=ports[2], metrics_port=ports[3],
                              keys_metrics_port=ports[4], pipeline=cfg.pipeline,
                              labels={LABEL_SCALE_MAX: str(cfg.bounds.max_replicas)})
        auth = (deploy.USER, deploy.password_file(sdir).read_text().strip())
        names = list(stack.functions)
        entry = names[0]
        if system.name.startswith("quart"):
            redis_url = plugin_services.ensure_redis(sdir, f"redis://127.0.0.1:{ports[5]}/0",
                                                     say)
            env = {"QUART_CONTROL_PERIOD_S": str(cfg.quart_period_s),
                   "QUART_SLO_S": str(cfg.slo_s),
                   "QUART_MIN_REPLICAS": str(cfg.bounds.min_replicas),
                   "QUART_MAX_REPLICAS": str(cfg.bounds.max_replicas),
                   **QUART_ENV.get(system.name, {})}
            plugin_url = plugin_services.start_plugin(sdir, ep.gateway, ep.prometheus,
                                                      redis_url, services.free_port(), say, env)
        else:
            driver = BaselineDriver(system, Gateway(ep.gateway, auth), ep.prometheus,
                                    cfg.slo_s, cfg.bounds)
        if cfg.nice:
            renicer = Renicer(sdir, cfg.nice).start()
        url = f"{ep.gateway}/function/{entry}"
        body = json.dumps({"inputs": SENTENCES[: cfg.inputs]}).encode()
        for _ in range(3):  # warm-up: the same for every system, not counted
            requests.post(url, data=body, headers={"Content-Type": "application/json"},
                          timeout=cfg.timeout_s)
        time.sleep(2.0)  # one scrape after the warm-up
        sampler = Sampler(ep.gateway, ep.metrics, auth, cfg.sample_s,
                          on_sample=(lambda snap: on_update(system.name, replicas=snap))
                          if on_update else None)
        done = {"n": 0, "failed": 0}
        lock = threading.Lock()
        t_start = time.monotonic()

        def on_done(r: openloop.Result) -> None:
            with lock:
                done["n"] += 1
                done["failed"] += r.status != 200
                n, failed = done["n"], done["failed"]
            if on_update:
                elapsed = time.monotonic() - t_start
                on_update(system.name, done=n, failed=failed, progress_s=elapsed,
                          sent=int(np.searchsorted(offsets, elapsed, side="right")),
                          latencies_s=[r.latency_s] if r.status == 200 else [])

        t0 = time.time()
        sampler.start(t0)
        if driver:
            driver.start(first_decision_s(system) + OPENLOOP_LEAD_S)
        results = openloop.run(url, body, offsets, timeout_s=cfg.timeout_s, on_done=on_done)
        time.sleep(cfg.drain_s)
        sampler.stop()
        if plugin_url:  # what its CV predictor did, read before the deployment goes
            report = plugin_report.fetch(plugin_url, auth,
                                         env.get("QUART_SMOOTHING", "1") != "0")
        finished = True
    finally:
        if renicer:
            renicer.stop()
        if driver:
            driver.stop()
        deploy.down(sdir, say=lambda m: None)
        if finished:  # a failed run keeps its logs (sdir/logs) for the post-mortem
            shutil.rmtree(sdir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    by_planned = sorted(results, key=lambda r: r.planned_s)
    lat = np.array([r.latency_s if r.status == 200 else np.nan for r in by_planned])
    ok = np.array([r.status == 200 for r in by_planned])
    timeline = sampler.timeline()
    return RunResult(
        system=system.name, mode="live", workload=dict(arrivals.meta, sha256=arrivals.sha256()),
        slo_s=cfg.slo_s, arrival_s=np.array([r.planned_s for r in by_planned]),
        latency_s=lat, ok=ok, timeline=timeline,
        actions={"serve": int(ok.sum()), **_starts(timeline, launcher)},
        start_time=start_iso, end_time=datetime.now(UTC).isoformat(timespec="seconds"),
        extra={"launcher": launcher, "driver_errors": driver.errors[:20] if driver else [],
               "driver_cycles": driver.cycles if driver else None,
               "errors": sorted({r.error for r in by_planned if r.error})[:10],
               **({"system_report": report} if report is not None else {})})


def _starts(timeline: list[TimelineRow], launcher: str) -> dict[str, int]:
    """Replicas started during the run (rises in desired replicas), by how they start."""
    last: dict[str, int] = {}
    started = 0
    for row in sorted(timeline, key=lambda r: r.t_s):
        prev = last.get(row.stage)
        if prev is not None and row.desired > prev:
            started += row.desired - prev
        last[row.stage] = row.desired
    return {"cold_start": started if launcher == "process" else 0,
            "fork_start": started if launcher == "fork" else 0}
