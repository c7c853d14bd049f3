"""Measure the MiniLM pipeline's per-stage service times on this machine.

Sequential requests (one at a time: no queueing, no contention between
stages) to the live 3-stage pipeline (``livepipe``); each answer's
``Server-Timing`` header carries every stage's own compute time.  End-to-end
latency minus the stages' compute is the pipeline's overhead (three gateway
hops, waitress/Flask, (de)serialisation).  The CPU of every process is
read from ``/proc`` (utime + stime) over the run: the gateway's per request,
split over the three hops, is ``StageSpec.hop_cpu_s`` (one Python process:
the simulator runs it one hop at a time); a replica's per request (compute
plus its own HTTP and codec work, all under its GIL) is the stage's work.
What that CPU does not explain, after the slowdown the compute saw, is
delay (``hop_s``).

On a shared machine ``Server-Timing`` (wall time) includes waiting for a
core while other programs run.  So the same stages are also loaded in this
process (one torch thread) and timed by *thread CPU time* on the same inputs,
which other processes cannot inflate (the shape of the service time, its
CV, comes from there; wall/CPU says how contended the machine was).  The
runnable threads of other programs during the sequential run are sampled
(``background``) and printed: with them the simulator reproduces the wall
times (``validate`` does it per load).

    python -m benchmark.sim.calibrate --requests 300
    python -m benchmark.sim.calibrate --rig      # the emu rig instead (calibrate_rig)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests

from benchmark.report.progress import track

from . import livepipe
from .background import RunnableSampler


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"mean_s": float(a.mean()), "cv": float(a.std() / a.mean()),
            "p50_s": float(np.percentile(a, 50)), "p95_s": float(np.percentile(a, 95))}


def cpu_times(model_dir: Path, inputs: int, reps: int) -> list[list[float]]:
    """Thread-CPU seconds of each stage's compute (forward, + pooling for the last), per rep."""
    import torch

    from functions.stage.bert import Stage

    torch.set_num_threads(1)
    texts = json.loads(livepipe.body(inputs))["inputs"]
    stages = [Stage.load(model_dir, k) for k in range(livepipe.STAGES)]
    out: list[list[float]] = [[] for _ in stages]
    with torch.inference_mode():
        for rep in range(reps + 5):
            x, mask = stages[0].tokenize(texts)
            for k, st in enumerate(stages):
                t = time.thread_time()
                x = st.forward(x, mask)
                if k == len(stages) - 1:
                    st.pool(x, mask)
                if rep >= 5:  # the first passes build torch's lazy state
                    out[k].append(time.thread_time() - t)
    return out


# size: the calibration CLI top to bottom (arguments, runs, table); reworked on branch simval
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--rig" in args:  # the emulated-accelerator rig: its own measurements
        from .calibrate_rig import main as rig_main

        return rig_main([x for x in args if x != "--rig"])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--inputs", type=int, default=8, help="sentences per request")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--nice", type=int, default=-20,
                    help="CPU priority of the pipeline's processes and the load generator "
                         "(-20: neighbours on a shared machine barely count; 0: leave as is; "
                         "below 0 needs root)")
    a = ap.parse_args(argv)
    if a.requests < 10 or a.warmup < 0 or a.inputs < 1:
        ap.error("--requests >= 10, --warmup >= 0 and --inputs >= 1 are required")
    payload = livepipe.body(a.inputs)
    per_stage: list[list[float]] = [[] for _ in range(livepipe.STAGES)]
    e2e: list[float] = []
    with livepipe.deployed() as live:
        if a.nice:
            print(f"{live.prioritise(a.nice)} threads at nice {a.nice}")
        s = requests.Session()
        hdr = {"Content-Type": "application/json"}
        sampler = None
        for i in track(range(a.warmup + a.requests), "sequential requests", transient=True):
            if i == a.warmup:
                sampler = RunnableSampler(live.replica_pids).start()
                groups = [live.gateway_pids()] + [live.replica_pids(f) for f in live.functions]
                cpu0 = [livepipe.cpu_seconds(g) for g in groups]
            t = time.perf_counter()
            r = s.post(live.url, data=payload, headers=hdr, timeout=60)
            d = time.perf_counter() - t
            r.raise_for_status()
            times = livepipe.stage_times(r.headers.get("Server-Timing"))
            if len(times) != livepipe.STAGES:
                raise SystemExit(f"Server-Timing has {len(times)} entries, expected "
                                 f"{livepipe.STAGES}: {r.headers.get('Server-Timing')!r}")
            if i >= a.warmup:
                e2e.append(d)
                for k, x in enumerate(times):
                    per_stage[k].append(x)
        bg = sampler.stop() if sampler else None
        # per request: [gateway, replica of stage 0, 1, 2] process CPU (utime + stime)
        burnt = [(livepipe.cpu_seconds(g) - c) / a.requests for g, c in zip(groups, cpu0,
                                                                            strict=True)]
        model_dir = live.model_dir
    cpu = [_stats(xs) for xs in cpu_times(model_dir, a.inputs, max(30, a.requests // 2))]
    stages = [_stats(xs) for xs in per_stage]
    total = _stats(e2e)
    overhead = total["mean_s"] - sum(st["mean_s"] for st in stages)
    # CPU per request from /proc (1/100 s ticks over the run: ~0.03 ms of resolution):
    # the gateway's is the hops' (one Python process); a replica's is its compute plus its
    # own HTTP and codec work, all of which competes for its GIL and the cores
    gateway_cpu, replica_cpu = burnt[0], burnt[1:]
    hop_cpu = gateway_cpu / livepipe.STAGES
    inflation = sum(st["mean_s"] for st in stages) / sum(c["mean_s"] for c in cpu)
    extra = sum(r - c["mean_s"] for r, c in zip(replica_cpu, cpu, strict=True))
    # what the CPU does not explain at the same slowdown is delay (loopback, waits)
    hop = max(0.0, overhead - (gateway_cpu + extra) * inflation) / livepipe.STAGES
    # a stage's work is its replica's CPU per request; its shape (CV) is the compute's
    service = [(r, c["cv"] * c["mean_s"] / r) for r, c in zip(replica_cpu, cpu, strict=True)]
    print(f"\nMiniLM 3-stage pipeline, {a.inputs} sentences/request, {a.requests} sequential "
          f"requests after {a.warmup} warm-up, {os.cpu_count()} cores; runnable threads of "
          f"other programs meanwhile {bg.mean if bg else float('nan'):.2f} (replicas' "
          f"{bg.replicas if bg else float('nan'):.2f}, {bg.samples if bg else 0} samples)\n")
    print(f"{'':<8} {'Server-Timing (wall)':^35} {'thread CPU':^17}")
    print(f"{'stage':<8} {'mean ms':>8} {'CV':>6} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'mean ms':>8} {'CV':>6} {'wall/CPU':>8}")
    for k, st in enumerate(stages):
        c = cpu[k]
        print(f"{k:<8} {st['mean_s'] * 1e3:8.2f} {st['cv']:6.3f} {st['p50_s'] * 1e3:8.2f} "
              f"{st['p95_s'] * 1e3:8.2f} {c['mean_s'] * 1e3:8.2f} {c['cv']:6.3f} "
              f"{st['mean_s'] / c['mean_s']:8.2f}")
    print(f"{'e2e':<8} {total['mean_s'] * 1e3:8.2f} {total['cv']:6.3f} "
          f"{total['p50_s'] * 1e3:8.2f} {total['p95_s'] * 1e3:8.2f}")
    print(f"\noverhead (e2e mean - compute means) {overhead * 1e3:.2f} ms wall; CPU per "
          f"request: gateway {gateway_cpu * 1e3:.2f} ms, replicas "
          + ", ".join(f"{r * 1e3:.2f}" for r in replica_cpu)
          + f" ms; compute wall/CPU {inflation:.2f}; per hop {hop_cpu * 1e3:.2f} ms gateway "
          f"CPU + {hop * 1e3:.2f} ms delay; median e2e {statistics.median(e2e) * 1e3:.2f} ms")
    lit = ", ".join(f"StageTiming({m:.5f}, {cv:.3f}, {hop:.5f}, {hop_cpu:.5f})"
                    for m, cv in service)
    print(f"\ncalibration.MINILM = ({lit})")
    if a.json:
        a.json.write_text(json.dumps({
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmark.sim.calibrate " + " ".join(argv or []),
            "inputs": a.inputs, "requests": a.requests, "stages": stages, "e2e": total,
            "overhead_s": overhead, "hop_s": hop, "hop_cpu_s": hop_cpu,
            "gateway_cpu_s": gateway_cpu, "replica_cpu_s": replica_cpu, "thread_cpu": cpu,
            "background": None if bg is None else vars(bg)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
