"""``run``: one system on one workload in the simulated cluster, as one call.

Events, all plain simpy events with callbacks (no simpy ``Process`` per
request: a generator-based process costs several events and a frame per
request): one per distinct arrival instant, one per compute completion per
node (processor sharing, see ``cluster``), one per hop between stages, and
the periodic scrape and control events.  Measured on this machine: simpy
alone dispatches ~850k timeout+callback events/s; the model costs ~21 us of
CPU per request of a 1-stage pipeline (~100k events per CPU-second), so at
trace scale the control periods dominate: building 1,000 stages' Tick
through the plugin's own ``combine``/``observe.build`` and the system's
``decide`` (``python -m benchmark.sim.scale`` prints the split).

Clock: the arrivals' own (``times_s``, seconds); initial replicas are ready
at t = 0 (deployed before the run, zygotes warm for fork platforms);
Prometheus scrapes at 0, ``scrape_s``, ...; the system decides every
``period_s`` half a scrape interval after a scrape, so what it reads is on
average as stale as live, where the two loops are not aligned.  A system on
its platform's own meter (``reads_concurrency``: KPA, Ray Serve) reads no
scrape, so its clock does not move with the scrape interval: it first decides
at 1.5 periods.
"""
from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import simpy

from benchmark.results import RunResult
from benchmark.systems.base import Autoscaler
from gateway_plugin.policies.burst import rate_window_s

from . import calibration
from .cluster import Cluster
from .concurrency import ConcurrencyMeter
from .control import Controller
from .dists import service_draws, with_late
from .model import Model
from .prom import Prometheus
from .recovery import recovery_times
from .runtime import Request, Stage
from .spec import SCALEUP, ClusterSpec, Failure, PipelineSpec, SimConfig, parse_failures

__all__ = ["default_cluster", "run"]


def default_cluster(pipelines: Sequence[PipelineSpec]) -> ClusterSpec:
    """Nodes of 16 cores / 64 GiB, one per 20 stages (at least one)."""
    n = sum(len(p.stages) for p in pipelines)
    return ClusterSpec.uniform(max(1, math.ceil(n / 20)), 64.0, 16)


def _arrival_arrays(arrivals: Any, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    try:
        times = np.asarray(arrivals.times_s, dtype=float)
        target = np.asarray(arrivals.target)
        targets = tuple(arrivals.targets)
    except AttributeError as e:
        raise TypeError("arrivals must have times_s, target and targets "
                        f"(benchmark.workloads.Arrivals): {e}") from None
    if times.ndim != 1 or target.shape != times.shape:
        raise ValueError("arrivals.times_s and arrivals.target must be 1-D and equally long")
    if len(times) and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0)
                       or times[0] < 0):
        raise ValueError("arrivals.times_s must be finite, >= 0 and sorted")
    unknown = sorted(set(targets) - set(index))
    if unknown:
        raise ValueError(f"arrivals target {unknown[:5]} that match no pipeline (by pipeline "
                         f"name or first stage name); pipelines: {sorted(index)[:5]}...")
    if len(target) and (target.min() < 0 or target.max() >= len(targets)):
        raise ValueError("arrivals.target holds an index outside arrivals.targets")
    lut = np.array([index[t] for t in targets], dtype=np.int64)
    return times, lut[target.astype(np.int64)] if len(target) else target.astype(np.int64)


def _workload(arrivals: Any, seed: int, n: int, duration: float) -> dict[str, Any]:
    meta = dict(getattr(arrivals, "meta", {}) or {})
    sha = arrivals.sha256() if callable(getattr(arrivals, "sha256", None)) else ""
    return {**meta, "name": meta.get("name", "workload"), "sha256": sha, "sim_seed": seed,
            "requests": n, "duration_s": float(getattr(arrivals, "duration_s", duration))}


def run(arrivals: Any, pipelines: Sequence[PipelineSpec] | PipelineSpec, system: Autoscaler, *,
        cluster: ClusterSpec | None = None, slo_s: float | None = None,
        fail_at: Sequence[Failure | Sequence[object] | str] = (), seed: int = 0,
        config: SimConfig | None = None,
        on_progress: Callable[[float, float], None] | None = None) -> RunResult:
    """Simulate ``system`` scaling ``pipelines`` under ``arrivals``; return its RunResult.

    ``arrivals`` (``benchmark.workloads.Arrivals``) targets pipelines by name
    (or by their first stage's name).  ``slo_s`` defaults to the pipelines'
    common SLO.  ``fail_at``: ``(t, "node", name)`` / ``(t, "replica", stage)``.
    ``seed`` drives service and spawn times (the arrivals carry their own).
    """
    cfg = config or SimConfig()
    specs = [pipelines] if isinstance(pipelines, PipelineSpec) else list(pipelines)
    if not specs or not all(isinstance(p, PipelineSpec) for p in specs):
        raise TypeError("pipelines must be a PipelineSpec or a non-empty sequence of them")
    names = [s.name for p in specs for s in p.stages]
    if len(set(names)) != len(names):
        raise ValueError("stage names must be unique across pipelines")
    if len({p.name for p in specs}) != len(specs):
        raise ValueError("pipeline names must be unique")
    for attr in ("name", "period_s", "scaleup", "decide", "initial_state"):
        if not hasattr(system, attr):
            raise TypeError(f"system {system!r} lacks {attr!r} (benchmark.systems.base.Autoscaler)")
    if system.scaleup not in SCALEUP:
        raise ValueError(f"system {system.name}: scaleup must be one of {SCALEUP}")
    if not (isinstance(system.period_s, (int, float)) and math.isfinite(system.period_s)
            and system.period_s > 0):
        raise ValueError(f"system {system.name}: period_s must be a finite number > 0")
    if slo_s is None:
        slos = {p.slo_s for p in specs}
        if len(slos) != 1:
            raise ValueError("pipelines have different SLOs: pass slo_s for the run's summary")
        slo_s = slos.pop()
    if not (math.isfinite(slo_s) and slo_s > 0):
        raise ValueError(f"slo_s must be a finite number > 0, got {slo_s!r}")
    failures = parse_failures(fail_at)
    cluster = cluster or default_cluster(specs)
    node_names = {n.name for n in cluster.nodes}
    if cfg.gateway_node is not None and cfg.gateway_node not in node_names:
        raise ValueError(f"gateway_node {cfg.gateway_node!r} is not a node of the cluster")
    for f in failures:
        if f.target is not None and ((f.kind == "node" and f.target not in node_names)
                                     or (f.kind == "replica" and f.target not in names)):
            raise ValueError(f"failure at {f.t_s:g}s: unknown {f.kind} {f.target!r}")
    if any(s.device for p in specs for s in p.stages) and \
            not all(n.devices for n in cluster.nodes):
        raise ValueError("a pipeline has emulated-device stages (StageSpec.device): every "
                         "node needs devices (NodeSpec.devices >= 1)")
    index = {p.name: i for i, p in enumerate(specs)}
    index.update({p.stages[0].name: i for i, p in enumerate(specs)})
    times, pipe = _arrival_arrays(arrivals, index)
    return _Run(times, pipe, specs, system, cluster, slo_s, failures, seed, cfg,
                on_progress).go(_workload(arrivals, seed, len(times),
                                          float(times[-1]) if len(times) else 0.0))


class _Run:
    def __init__(self, times: np.ndarray, pipe: np.ndarray, specs: list[PipelineSpec],
                 system: Autoscaler, cluster: ClusterSpec, slo_s: float,
                 failures: tuple[Failure, ...], seed: int, cfg: SimConfig,
                 on_progress: Callable[[float, float], None] | None) -> None:
        self.env = simpy.Environment()
        self.times, self.pipe = times, pipe
        self.system, self.slo_s, self.failures, self.cfg = system, slo_s, failures, cfg
        self.on_progress = on_progress
        self.latency = [math.nan] * len(times)
        self.ok = [False] * len(times)
        seqs = np.random.SeedSequence(seed).spawn(2 * sum(len(p.stages) for p in specs))
        stages: list[Stage] = []
        pipes: list[list[Stage]] = []
        for pi, p in enumerate(specs):
            row = []
            for k, s in enumerate(p.stages):
                i = len(stages)
                prof = calibration.profile(s.spawn)
                if prof is None:
                    raise ValueError(f"stage {s.name}: unknown spawn profile {s.spawn!r}")
                draw = service_draws(str(s.dist), s.service_mean_s, s.cv,
                                     np.random.default_rng(seqs[2 * i]))
                if s.late_p > 0:  # its own stream: the base draws stay those without it
                    draw = with_late(draw, s.late_p, s.late_s,
                                     np.random.default_rng(seqs[2 * i].spawn(1)[0]))
                st = Stage(i, s, pi, k, draw,
                           calibration.spawn_draws(s.spawn, np.random.default_rng(seqs[2 * i + 1])),
                           prof.first_call_s)
                st.cold_cpu = prof.cold_cpu_s
                stages.append(st)
                row.append(st)
            for a, b in itertools.pairwise(row):
                a.next = b
            pipes.append(row)
        self.stages = stages
        self.model = Model(self.env, cfg, pipes, system.scaleup == "fork",
                           lambda done: Cluster(cluster, self.env, done), self.latency, self.ok)
        window = cfg.rate_window_s or rate_window_s(float(system.period_s))
        self.prom = Prometheus(stages, window, cfg.scrape_s)
        self.ctl = Controller(self.model, self.prom, specs, stages)
        self.hop0 = [p[0].hop_delay for p in self.model.pipes]
        self.cluster_spec = cluster

    # -- periodic and one-off events ------------------------------------------------

    def _every(self, first: float, period: float, fn: Callable[[float], None]) -> None:
        def cb(ev: simpy.events.Event) -> None:
            self.model.events += 1
            fn(self.env.now)
            nxt = self.env.timeout(period)
            nxt.callbacks.append(cb)
        ev = self.env.timeout(first)
        ev.callbacks.append(cb)

    def _at(self, t: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(max(0.0, t - self.env.now))
        ev.callbacks.append(lambda _e: fn())

    def _feed(self, order: np.ndarray, feed_t: list[float]) -> None:
        n = len(order)
        idx = order.tolist()
        pipe = self.pipe.tolist()
        times = self.times.tolist()
        pipes = self.model.pipes
        model = self.model
        pos = [0]

        def cb(_ev: simpy.events.Event) -> None:
            model.events += 1
            i = pos[0]
            now = feed_t[i]
            while i < n and feed_t[i] <= now:
                j = idx[i]
                p = pipes[pipe[j]]
                model.outstanding += 1
                model.send(Request(j, pipe[j], times[j], len(p)), p[0])
                i += 1
            pos[0] = i
            if i < n:
                ev = self.env.timeout(feed_t[i] - now)
                ev.callbacks.append(cb)

        if n:
            ev = self.env.timeout(feed_t[0])
            ev.callbacks.append(cb)

    def _fail(self, f: Failure) -> None:
        m = self.model
        if f.kind == "node":
            up = [n for n in m.cluster.nodes if n.up]
            if f.target is None and not up:
                return
            node = m.cluster.by_name[f.target] if f.target is not None else \
                max(up, key=lambda n: len(n.replicas))  # max keeps the first of equals
            hit = m.node_down(node) if node.up else []
        else:
            st = next(s for s in self.stages if s.name == f.target) if f.target is not None \
                else max(self.stages, key=lambda s: s.inflight())
            live = [r for r in st.replicas if r.ready and not r.draining]
            if not live:
                return
            m.kill(min(live, key=lambda r: r.uid))
            hit = [st]
        def replace() -> None:
            for s in hit:
                m.reconcile(s)
        self._at(self.env.now + self.cfg.reconcile_s, replace)

    # -- the run ----------------------------------------------------------------------

    def go(self, workload: dict[str, Any]) -> RunResult:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        for st in self.stages:
            for _ in range(st.spec.replicas):
                if not self.model.place(st, ready_now=True):
                    raise ValueError(f"the cluster cannot hold the initial replicas of {st.name}")
        feed = self.times + np.asarray(self.hop0)[self.pipe] if len(self.times) else self.times
        order = np.argsort(feed, kind="stable")
        self._feed(order, feed[order].tolist())
        end = float(feed.max()) if len(feed) else 0.0
        self._every(0.0, self.cfg.scrape_s, self.prom.scrape)
        if getattr(self.system, "reads_concurrency", False):  # KPA, Ray Serve
            self.ctl.meter = ConcurrencyMeter(self.stages)
            self._every(0.0, self.ctl.meter.sample_s, self.ctl.meter.sample)
        state = [self.system.initial_state()]
        period = float(self.system.period_s)

        every = self.cfg.timeline_s

        def control(now: float) -> None:
            state[0] = self.ctl.step(self.system, state[0], now, time.perf_counter)
            if self.cfg.timeline and every is None:
                self.ctl.record(now)
        own_meter = getattr(self.system, "reads_concurrency", False)
        phase = period if own_meter else min(self.cfg.scrape_s, period)
        self._every(period + phase / 2, period, control)
        if self.cfg.timeline and every is not None:  # sampled like the live harness
            self._every(0.0, every, self.ctl.record)
        for f in self.failures:
            self._at(f.t_s, functools.partial(self._fail, f))
        for spec, node in zip(self.cluster_spec.nodes, self.model.cluster.nodes, strict=True):
            if not isinstance(spec.background, (int, float)):
                for t, v in spec.background:
                    if t > 0:
                        self._at(t, functools.partial(node.set_background, v))
        if self.on_progress is not None:
            cb = self.on_progress
            self._every(0.0, max(end / 100, 1e-3), lambda now: cb(min(now, end), end))
        self.env.run(until=end + 1e-9)
        horizon = end + self.cfg.drain_horizon_s
        while self.model.outstanding > 0 and self.env.now < horizon:
            self.env.run(until=min(self.env.now + 1.0, horizon))
        if self.on_progress is not None:
            self.on_progress(end, end)
        self.cpu_s = time.process_time() - cpu0
        result = self._result(workload, started, time.perf_counter() - wall0)
        report = getattr(self.system, "report", None)
        if callable(report):  # e.g. Quart's CV predictor selections
            result.extra["system_report"] = report(state[0])
        return result

    def _result(self, workload: dict[str, Any], started: str, wall: float) -> RunResult:
        now = self.env.now
        if self.cfg.timeline:
            self.ctl.record(now)
        for st in self.stages:
            self.model._ready_changed(st, 0)
        lat = np.asarray(self.latency, dtype=float)
        ok = np.asarray(self.ok, dtype=bool)
        fails = [f.t_s for f in self.failures]
        rec = recovery_times(self.times, lat, ok, fails, self.slo_s,
                             self.cfg.recovery_window_s) if fails else []
        events = self.model.events + sum(n.gen for n in self.model.cluster.nodes)
        m = self.model
        return RunResult(
            system=str(self.system.name), mode="sim", workload=workload, slo_s=self.slo_s,
            arrival_s=self.times, latency_s=lat, ok=ok, timeline=self.ctl.timeline,
            actions={"serve": m.actions["serve"], "cold_start": m.actions["cold_start"],
                     "migrate": 0},
            recovery_s=rec, start_time=started,
            end_time=datetime.now(UTC).isoformat(timespec="seconds"),
            extra={"events": events, "wall_s": wall, "cpu_s": self.cpu_s,
                   "events_per_s": events / wall if wall else 0,
                   "sim_end_s": now, "decide_s": self.ctl.decide_s, "control_ticks": self.ctl.ticks,
                   "scrapes": self.prom.scrapes, "scrape_s": self.cfg.scrape_s,
                   "period_s": float(self.system.period_s),
                   "rate_window_s": self.prom.window_s, "fork_start": m.actions["fork_start"],
                   "rejected": dict(m.rejected), "unfinished": m.outstanding,
                   "replica_seconds_exact": sum(s.rs_acc for s in self.stages),
                   "placement": self.cluster_spec.placement,
                   "nodes": len(self.cluster_spec.nodes), "scaleup": self.system.scaleup})

