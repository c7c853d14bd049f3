"""Simulated vs live: the MiniLM pipeline at fixed replicas, the same arrivals in both.

For each load: gamma arrivals (``--cv``, seeded) are sent open-loop to the
live pipeline (``benchmark.openloop``; latency from each request's planned
send time) and replayed in the simulator with the calibrated stage times
(``calibration.MINILM``) on one node with this machine's cores.  Replicas
are fixed (the registry's ``static`` system with a plan), so what is
compared is the model of queueing, the compute lock, slots held downstream
and processor sharing, not an autoscaler.  Prints p50/p99 live and
simulated and their ratio; the issue's acceptance is within 25 %.

    python -m benchmark.sim.validate --loads 4,8 --duration 60
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import requests

from benchmark import openloop
from benchmark.systems.base import Bounds
from benchmark.systems.registry import SYSTEMS
from benchmark.workloads import gamma

from . import calibration, livepipe
from .engine import run
from .spec import ClusterSpec, SimConfig

TOLERANCE = 0.25


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


def simulate(arrivals, replicas: int, cores: float, seed: int, scrape_s: float):  # type: ignore[no-untyped-def]
    pipe = calibration.minilm_pipeline(f"bench{livepipe.STAGES}", slo_s=10.0, replicas=replicas)
    plan = {s.name: replicas for s in pipe.stages}
    static = SYSTEMS["static"](Bounds(replicas, replicas), plan=plan)
    return run(arrivals, pipe, static, cluster=ClusterSpec.uniform(1, 20.0, cores), seed=seed,
               config=SimConfig(scrape_s=scrape_s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="4,8", help="requests per second, comma list")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--cv", type=float, default=1.0)
    ap.add_argument("--replicas", type=int, default=1, help="per stage, fixed")
    ap.add_argument("--inputs", type=int, default=8, help="sentences per request")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--cores", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    loads = [float(x) for x in a.loads.split(",") if x.strip()]
    if not loads or min(loads) <= 0 or a.duration <= 0 or a.replicas < 1:
        ap.error("--loads must be positive numbers; --duration > 0; --replicas >= 1")
    if not calibration.MINILM:
        ap.error("no calibration: run python -m benchmark.sim.calibrate first")
    payload = livepipe.body(a.inputs)
    rows = []
    with livepipe.deployed() as live:
        if a.replicas != 1:
            live.scale(a.replicas)
        s = requests.Session()
        for rps in loads:
            for _ in range(a.warmup):
                s.post(live.url, data=payload, timeout=60,
                       headers={"Content-Type": "application/json"}).raise_for_status()
            arrivals = gamma(rps, a.cv, a.duration, seed=a.seed, target=live.functions[0])
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = openloop.run(live.url, payload, arrivals.times_s)
            wall = time.perf_counter() - t0
            lat_live = np.array([r.latency_s for r in res if r.status == 200])
            sim = simulate(arrivals, a.replicas, a.cores, a.seed, 1.0)
            lat_sim = sim.latency_s[sim.ok]
            rows.append((rps, len(res), len(lat_live), lat_live, len(lat_sim), lat_sim, load0,
                         wall))
            time.sleep(2.0)
    print(f"\nMiniLM 3-stage pipeline, {a.replicas} replica(s) per stage, {a.inputs} "
          f"sentences/request, gamma arrivals CV {a.cv:g}, {a.duration:g} s per load, seed "
          f"{a.seed}; simulator: 1 node x {a.cores:g} cores, scrape 1 s\n")
    print(f"{'rps':>5} {'n':>5} {'live ok':>7} {'sim ok':>6} {'live p50':>9} {'sim p50':>8} "
          f"{'ratio':>6} {'live p99':>9} {'sim p99':>8} {'ratio':>6} {'load':>5}")
    worst = 0.0
    for rps, n, n_live, ll, n_sim, ls, load0, _wall in rows:
        p50l, p50s, p99l, p99s = _pct(ll, 50), _pct(ls, 50), _pct(ll, 99), _pct(ls, 99)
        r50, r99 = p50s / p50l, p99s / p99l
        worst = max(worst, abs(r50 - 1), abs(r99 - 1))
        print(f"{rps:5g} {n:5d} {n_live:7d} {n_sim:6d} {p50l * 1e3:9.1f} {p50s * 1e3:8.1f} "
              f"{r50:6.2f} {p99l * 1e3:9.1f} {p99s * 1e3:8.1f} {r99:6.2f} {load0:5.1f}")
    verdict = "within" if worst <= TOLERANCE else "NOT within"
    print(f"\nlargest deviation {worst * 100:.0f} %: {verdict} the {TOLERANCE * 100:.0f} % "
          "acceptance (times in ms; load = 1-min load average when the load started)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
