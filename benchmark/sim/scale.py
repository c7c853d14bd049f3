"""Scale check: a 1-hour Azure-shaped trace over 1,000 functions in the simulator.

The issue's target: ``synthetic_azure(1000, 60)`` simulated in <= 5 minutes
on this 2-core machine, with a real system deciding every period.  Each
function is one pipeline of ``--stages`` stages timed like the MiniLM
stages (``calibration.MINILM``, cycled), on a cluster of ``--nodes`` nodes;
the run prints wall time, events processed and events/s, the share of wall
time spent in the system's ``decide``, and the run's summary.

    python -m benchmark.sim.scale                      # quart, 1,000 x 60 min
    python -m benchmark.sim.scale --system openfaas-ce --functions 200 --minutes 10
"""
from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from benchmark.results import summarize
from benchmark.systems.base import Bounds
from benchmark.systems.registry import SYSTEMS, parse_systems
from benchmark.workloads import synthetic_azure

from . import calibration
from .engine import run
from .spec import ClusterSpec, PipelineSpec, SimConfig, StageSpec


def pipelines_for(targets: tuple[str, ...], stages: int, slo_s: float) -> list[PipelineSpec]:
    timings = calibration.MINILM or (calibration.StageTiming(0.02, 0.2, 0.003),)
    out = []
    for name in targets:
        out.append(PipelineSpec(name, tuple(
            StageSpec(f"{name}-{k}" if stages > 1 else name, timings[k % len(timings)].mean_s,
                      timings[k % len(timings)].cv, memory_gib=0.42,
                      fork_overhead_gib=11.1 / 1024, cpu=1.0, replicas=1,
                      hop_s=timings[k % len(timings)].hop_s,
                      hop_cpu_s=timings[k % len(timings)].hop_cpu_s)
            for k in range(stages)), slo_s))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--stages", type=int, default=1, help="stages per function's pipeline")
    ap.add_argument("--system", default="quart", help="one of: " + ", ".join(SYSTEMS))
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--cores", type=float, default=16)
    ap.add_argument("--memory-gib", type=float, default=64)
    ap.add_argument("--placement", default="cache-aware", choices=("cache-aware", "least-loaded"))
    ap.add_argument("--slo", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-every", type=int, default=0,
                    help="quart systems: retrain the CV predictor every N periods (default 0 = "
                         "never: with most functions below 30 arrivals per window no held-out "
                         "stage has an observed CV and chain.with_trained_predictor raises)")
    a = ap.parse_args(argv)
    if a.functions < 1 or a.minutes < 1 or a.stages < 1:
        ap.error("--functions, --minutes and --stages must be >= 1")
    [name] = parse_systems(a.system)
    t0 = time.perf_counter()
    arrivals = synthetic_azure(a.functions, a.minutes, seed=a.seed).to_arrivals(seed=a.seed)
    pipes = pipelines_for(arrivals.targets, a.stages, a.slo)
    opts = {"train_every": a.train_every} if name.startswith("quart") else {}
    system = SYSTEMS[name](Bounds(1, 20), **opts)
    prep = time.perf_counter() - t0
    n_stages = sum(len(p.stages) for p in pipes)
    print(f"{len(arrivals.times_s):,} requests to {len(arrivals.targets)} functions over "
          f"{a.minutes} min, {n_stages} stages, {a.nodes} nodes x {a.cores:g} cores; system "
          f"{name} (period {system.period_s:g} s); workload sha256 {arrivals.sha256()[:16]}; "
          f"setup {prep:.1f} s")
    bar = tqdm(total=100, unit="%", desc="simulating", leave=True, mininterval=2.0)

    def progress(now: float, total: float) -> None:
        bar.n = round(100 * now / total) if total else 100
        bar.refresh()

    res = run(arrivals, pipes, system,
              cluster=ClusterSpec.uniform(a.nodes, a.memory_gib, a.cores, a.placement),
              seed=a.seed, config=SimConfig(), on_progress=progress)
    bar.close()
    x = res.extra
    s = summarize(res)
    print(f"wall {x['wall_s']:.1f} s (target <= 300 s; CPU {x['cpu_s']:.1f} s), "
          f"{x['events']:,} events, "
          f"{x['events_per_s']:,.0f} events/s, {len(res.ok) / x['wall_s']:,.0f} requests/s")
    print(f"decide: {x['decide_s']:.1f} s over {x['control_ticks']} periods "
          f"({1e3 * x['decide_s'] / max(1, x['control_ticks']):.1f} ms each, "
          f"{100 * x['decide_s'] / x['wall_s']:.0f} % of wall)")
    print(f"requests {s['total_requests']:,}, failed {s['failed_requests']:,}, "
          f"p50 {s['p50_latency']:.1f} ms, p99 {s['p99_latency']:.1f} ms, "
          f"SLO attainment {s['slo_attainment']:.3f}, replica-seconds "
          f"{s['replica_seconds']:,.0f}, cold starts {s['cold_start_count']}, "
          f"forks {x['fork_start']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
