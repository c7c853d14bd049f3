"""``python -m benchmark.sim``: a quick simulated run of one or more systems, with a summary.

The MiniLM pipeline (calibrated stage times) under gamma arrivals, every
chosen system on the same arrivals, a progress bar per system, then one line
per system: requests, failures, p50/p99, SLO attainment, replica-seconds,
cold starts, recovery time, events/s.

    python -m benchmark.sim --systems quart,openfaas-ce --rps 20 --cv 4 --duration 300
    python -m benchmark.sim --systems static --fail-at 120:node:node-0
"""
from __future__ import annotations

import argparse
import math

from tqdm import tqdm

from benchmark.results import summarize
from benchmark.systems.base import Bounds
from benchmark.systems.registry import SYSTEMS, build_systems, parse_systems
from benchmark.workloads import gamma

from . import calibration
from .engine import run
from .spec import ClusterSpec, SimConfig, parse_failures


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default="quart,openfaas-ce",
                   help="comma list (shorthands all, baselines); names: " + ", ".join(SYSTEMS))
    p.add_argument("--pipeline", choices=("minilm", "bert-large"), default="minilm")
    p.add_argument("--rps", type=float, default=10.0)
    p.add_argument("--cv", type=float, default=4.0)
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--slo", type=float, default=0.5, help="pipeline SLO, seconds")
    p.add_argument("--max-replicas", type=int, default=20)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--cores", type=float, default=4.0)
    p.add_argument("--memory-gib", type=float, default=16.0)
    p.add_argument("--placement", choices=("cache-aware", "least-loaded"),
                   default="cache-aware")
    p.add_argument("--scrape", type=float, default=5.0, help="Prometheus scrape interval, s")
    p.add_argument("--fail-at", action="append", default=[],
                   help="T:node[:NAME] or T:replica[:STAGE]; repeatable")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        names = parse_systems(a.systems)
        failures = parse_failures(a.fail_at)
        if a.rps <= 0 or a.cv <= 0 or a.duration <= 0:
            raise ValueError("--rps, --cv and --duration must be > 0")
        pipe = calibration.minilm_pipeline(slo_s=a.slo) if a.pipeline == "minilm" \
            else calibration.bert_large_pipeline(slo_s=a.slo)
        cluster = ClusterSpec.uniform(a.nodes, a.memory_gib, a.cores, a.placement)
        config = SimConfig(scrape_s=a.scrape)
        systems = build_systems(names, Bounds(1, a.max_replicas))
    except ValueError as e:
        print(f"error: {e}")
        return 2
    arrivals = gamma(a.rps, a.cv, a.duration, seed=a.seed, target=pipe.name)
    print(f"{len(arrivals.times_s)} requests, {a.rps:g} rps, CV {a.cv:g}, {a.duration:g} s, "
          f"pipeline {pipe.name} ({len(pipe.stages)} stages), SLO {a.slo:g} s, "
          f"arrivals sha256 {arrivals.sha256()[:16]}")
    rows = []
    for system in systems:
        bar = tqdm(total=100, unit="%", desc=system.name, leave=False, mininterval=0.5)

        def progress(now: float, total: float, bar: tqdm = bar) -> None:
            bar.n = round(100 * now / total) if total else 100
            bar.refresh()

        res = run(arrivals, pipe, system, cluster=cluster, fail_at=failures, seed=a.seed,
                  config=config, on_progress=progress)
        bar.close()
        rows.append((res, summarize(res)))
    print(f"{'system':<22} {'ok':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'SLO':>6} "
          f"{'replica-s':>10} {'cold':>5} {'recovery s':>10} {'events/s':>9}")
    for res, s in rows:
        rec = s["avg_recovery_time"]
        print(f"{res.system:<22} {s['successful_requests']:>6} {s['failed_requests']:>6} "
              f"{s['p50_latency']:>8.1f} {s['p99_latency']:>8.1f} {s['slo_attainment']:>6.3f} "
              f"{s['replica_seconds']:>10.0f} {s['cold_start_count']:>5} "
              f"{'-' if math.isnan(rec) else f'{rec:.1f}':>10} "
              f"{res.extra['events_per_s']:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
