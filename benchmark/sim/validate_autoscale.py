"""Simulated vs live on the rig with each system autoscaling: P99 and replica-seconds.

For each system (Quart, run live as the real plugin with Redis and Prometheus; each
baseline, run live by ``benchmark.live.driver`` against the gateway): the same gamma
arrivals are sent to a fresh rig deployment (``benchmark.live.run_live`` on stack.yml's
``emu`` pipeline at ``--time-scale``) and replayed in the simulator on the rig model
(``rig``: device times from the partition's manifest, host costs and spawn times from
``rig_calibration.json``), with the same system, built the same way: the same bounds,
the same SLO, Quart's control period as the live plugin's (``LiveConfig.quart_period_s``).
New replicas start as on each system's platform, live and simulated alike: Quart forks
(keys_manager T0), the baselines start a fresh process (a real cold start: imports
torch and the stage; the rig's spawn profile carries both, measured).

Compared: P99 of the successful requests and replica-seconds (ready replicas summed
over stages, integrated over the arrivals' duration from timelines sampled every
second in both).  Goal (issue 15): within 25 %.  The simulated figures pool
``--sim-seeds`` runs (service-time and spawn seeds) on the same arrivals.

    python -m benchmark.sim.validate_autoscale --systems quart,openfaas-ce --rps 14 --cv 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.live.run import LiveConfig, run_live
from benchmark.results import RunResult, TimelineRow
from benchmark.rig_workload import profiled_service_s
from benchmark.systems.base import Autoscaler, Bounds
from benchmark.systems.registry import parse_systems
from benchmark.workloads import Arrivals, gamma

from . import rigpipe
from .engine import run
from .rig import RigHost, rig_cluster, rig_config, rig_pipeline
from .validate import pct, write

GOAL = 0.25
OUT = Path("benchmark/results/validate")


@dataclass
class Row:
    system: str
    requests: int
    live_ok: int
    sim_ok: float
    live_p99: float
    sim_p99: float
    live_rs: float
    sim_rs: float
    live_starts: int
    sim_starts: float

    @property
    def r99(self) -> float:
        return self.sim_p99 / self.live_p99

    @property
    def rrs(self) -> float:
        return self.sim_rs / self.live_rs

    @property
    def passed(self) -> bool:
        return abs(self.r99 - 1) <= GOAL and abs(self.rrs - 1) <= GOAL

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_p99": self.r99, "ratio_replica_s": self.rrs,
                "pass": self.passed}


def replica_seconds(timeline: list[TimelineRow], end_s: float) -> float:
    """Ready replicas integrated over [0, end_s], summed over stages (a step function
    through the samples; before the first sample a stage counts its first value)."""
    by: dict[str, list[tuple[float, int]]] = {}
    for r in timeline:
        by.setdefault(r.stage, []).append((r.t_s, r.replicas))
    total = 0.0
    for rows in by.values():
        rows.sort()
        pts = [(0.0, rows[0][1])] + [(t, n) for t, n in rows if 0.0 < t < end_s]
        for (t0, n), (t1, _) in zip(pts, pts[1:] + [(end_s, 0)], strict=True):
            total += n * (t1 - t0)
    return total


def build(name: str, a: argparse.Namespace, arrivals: Arrivals) -> Autoscaler:
    """The system as ``quart-faas compare`` builds it, with the live plugin's period."""
    options: dict[str, dict[str, Any]] = {}
    if name.startswith("quart"):
        options[name] = {"period_s": a.quart_period}
    elif name == "static":  # sized once from the mean rate and the profile, per stage
        rate = len(arrivals.times_s) / arrivals.duration_s
        options[name] = {"mean_rps": {f"{rigpipe.PIPELINE}-stage-{i}": rate
                                      for i in range(rigpipe.STAGES)},
                         "service_time_s": profiled_service_s()}
    (system,) = parse_systems(name, Bounds(a.min_replicas, a.max_replicas), options)
    return system


def live(name: str, a: argparse.Namespace, arrivals: Arrivals) -> RunResult:
    state = Path(tempfile.mkdtemp(prefix="quart-val-"))  # short: zygote sockets live here
    env = rigpipe.rig_env(a.time_scale, a.devices)
    env.pop("QUART_LAUNCHER")  # run_live sets it from the system's scale-up
    cfg = LiveConfig(stack_file=str(rigpipe.STACK), pipeline=rigpipe.PIPELINE, state_dir=state,
                     slo_s=a.slo, bounds=Bounds(a.min_replicas, a.max_replicas),
                     quart_period_s=a.quart_period, inputs=a.inputs, nice=a.nice,
                     extra_env=env, timeout_s=120.0)
    try:
        return run_live(arrivals, build(name, a, arrivals), cfg)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def simulated(name: str, a: argparse.Namespace, arrivals: Arrivals, host: RigHost
              ) -> list[RunResult]:
    pipe = rig_pipeline(a.model_dir, tuple(rigpipe.texts(a.inputs)), a.time_scale, host,
                        replicas=a.min_replicas, slo_s=a.slo)
    return [run(arrivals, pipe, build(name, a, arrivals), cluster=rig_cluster(a.devices),
                seed=a.seed + i, config=rig_config(max_replicas=a.max_replicas))
            for i in range(a.sim_seeds)]


def _timeline(res: RunResult) -> list[tuple[float, str, int, int]]:
    return [(round(r.t_s, 3), r.stage, r.replicas, r.desired) for r in res.timeline]


def compare(name: str, a: argparse.Namespace, arrivals: Arrivals, host: RigHost,
            traces: dict[str, Any] | None = None) -> Row:
    """Live then simulated; ``traces`` gets both timelines (ready, desired per stage)."""
    lv = live(name, a, arrivals)
    sims = simulated(name, a, arrivals, host)
    if traces is not None:
        traces[name] = {"live": _timeline(lv), "sim": _timeline(sims[0]),
                        "live_errors": lv.extra.get("driver_errors", [])}
    end = arrivals.duration_s
    sim_lat = np.concatenate([s.latency_s[s.ok] for s in sims])
    starts = [s.actions["cold_start"] + s.extra["fork_start"] for s in sims]
    return Row(name, len(arrivals.times_s), int(lv.ok.sum()),
               float(np.mean([s.ok.sum() for s in sims])), pct(lv.latency_s[lv.ok], 99),
               pct(sim_lat, 99), replica_seconds(lv.timeline, end),
               float(np.mean([replica_seconds(s.timeline, end) for s in sims])),
               int(lv.actions.get("cold_start", 0) + lv.actions.get("fork_start", 0)),
               float(np.mean(starts)))


def print_table(rows: list[Row], meta: dict[str, Any]) -> None:
    print(f"\nemu rig autoscaling: {meta['rps']:g} rps, CV {meta['cv']:g}, "
          f"{meta['duration_s']:g} s, time scale {meta['time_scale']:g}, SLO "
          f"{meta['slo_s']:g} s, replicas {meta['min_replicas']}..{meta['max_replicas']}, "
          f"arrivals sha256 {meta['arrivals_sha256'][:16]}\n")
    print(f"{'system':<18} {'n':>5} {'ok live/sim':>12} {'P99 live':>9} {'P99 sim':>8} "
          f"{'ratio':>6} {'rep-s live':>10} {'rep-s sim':>9} {'ratio':>6} "
          f"{'starts live/sim':>16}  goal ±{GOAL * 100:.0f} %")
    for r in rows:
        print(f"{r.system:<18} {r.requests:5d} {f'{r.live_ok}/{r.sim_ok:.0f}':>12} "
              f"{r.live_p99:9.0f} {r.sim_p99:8.0f} {r.r99:6.3f} {r.live_rs:10.0f} "
              f"{r.sim_rs:9.0f} {r.rrs:6.3f} {f'{r.live_starts}/{r.sim_starts:.1f}':>16}  "
              f"{'pass' if r.passed else 'MISS'}")
    print(f"\n{sum(r.passed for r in rows)} of {len(rows)} systems within "
          f"±{GOAL * 100:.0f} % on P99 and replica-seconds")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmark.sim.validate_autoscale",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="quart,baselines")
    ap.add_argument("--rps", type=float, default=14.0)
    ap.add_argument("--cv", type=float, default=4.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--slo", type=float, default=1.0, help="seconds, at the time scale")
    ap.add_argument("--min-replicas", type=int, default=1)
    ap.add_argument("--max-replicas", type=int, default=5, help="the stack's CE cap")
    ap.add_argument("--quart-period", type=float, default=LiveConfig.quart_period_s)
    ap.add_argument("--time-scale", type=float, default=rigpipe.TIME_SCALE)
    ap.add_argument("--devices", type=int, default=rigpipe.DEVICES)
    ap.add_argument("--inputs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sim-seeds", type=int, default=3)
    ap.add_argument("--nice", type=int, default=-20)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    try:
        a.names = parse_systems(a.systems)
    except ValueError as e:
        ap.error(str(e))
    if a.rps <= 0 or a.cv <= 0 or a.duration <= 0 or a.slo <= 0 or a.sim_seeds < 1 \
            or not 0 <= a.min_replicas <= a.max_replicas or a.max_replicas < 1:
        ap.error("--rps, --cv, --duration, --slo > 0; 0 <= --min-replicas <= --max-replicas")
    a.model_dir = rigpipe.MODEL_DIR
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    host = RigHost.load()
    rigpipe.ensure_partition(a.model_dir)
    arrivals = gamma(a.rps, a.cv, a.duration, seed=a.seed, target=rigpipe.PIPELINE)
    meta = {"command": "python -m benchmark.sim.validate_autoscale "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "rps": a.rps,
            "cv": a.cv, "duration_s": a.duration, "time_scale": a.time_scale,
            "slo_s": a.slo, "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "quart_period_s": a.quart_period, "devices": a.devices, "seed": a.seed,
            "sim_seeds": a.sim_seeds, "nice": a.nice, "host_calibration": host.source,
            "arrivals_sha256": arrivals.sha256(), "loadavg_before": os.getloadavg()}
    rows: list[Row] = []
    traces: dict[str, Any] = {}
    t0 = time.monotonic()
    for name in a.names:
        rows.append(compare(name, a, arrivals, host, traces))
        r = rows[-1]
        print(f"{name}: P99 live {r.live_p99:.0f} sim {r.sim_p99:.0f} ms; replica-s live "
              f"{r.live_rs:.0f} sim {r.sim_rs:.0f}", flush=True)
    meta["wall_s"] = time.monotonic() - t0
    meta["loadavg_after"] = os.getloadavg()
    print_table(rows, meta)
    stem = f"validate_autoscale_cv{a.cv:g}"
    write(rows, meta, a.out, stem)
    (a.out / f"{stem}_timelines.json").write_text(json.dumps(traces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
