"""Measure the MiniLM pipeline's per-stage service times on this machine.

Sequential requests (one at a time, so no queueing and no CPU contention
between stages) to the live 3-stage pipeline (``livepipe``); each answer's
``Server-Timing`` header carries every stage's own compute time, which is
what the simulator's service-time distribution describes.  End-to-end
latency minus the stages' compute is the pipeline's overhead (three gateway
hops, waitress/Flask, (de)serialisation); the simulator charges a third of
it before each stage (``StageSpec.hop_s``).

Prints mean, CV, p50 and p95 per stage, the overhead, and the
``StageTiming`` tuple to put in ``calibration.MINILM``; ``--json`` also
writes them.

    python -m benchmark.sim.calibrate --requests 300
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests
from tqdm import tqdm  # type: ignore[import-untyped]

from . import livepipe


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"mean_s": float(a.mean()), "cv": float(a.std() / a.mean()),
            "p50_s": float(np.percentile(a, 50)), "p95_s": float(np.percentile(a, 95))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--inputs", type=int, default=8, help="sentences per request")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    if a.requests < 10 or a.warmup < 0 or a.inputs < 1:
        ap.error("--requests >= 10, --warmup >= 0 and --inputs >= 1 are required")
    payload = livepipe.body(a.inputs)
    per_stage: list[list[float]] = [[] for _ in range(livepipe.STAGES)]
    e2e: list[float] = []
    load0 = os.getloadavg()[0]
    with livepipe.deployed() as live:
        s = requests.Session()
        hdr = {"Content-Type": "application/json"}
        for i in tqdm(range(a.warmup + a.requests), desc="sequential requests", leave=False):
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
    load1 = os.getloadavg()[0]
    stages = [_stats(xs) for xs in per_stage]
    total = _stats(e2e)
    overhead = total["mean_s"] - sum(st["mean_s"] for st in stages)
    hop = overhead / livepipe.STAGES
    print(f"\nMiniLM 3-stage pipeline, {a.inputs} sentences/request, {a.requests} sequential "
          f"requests after {a.warmup} warm-up; load average {load0:.1f} -> {load1:.1f} "
          f"on {os.cpu_count()} cores\n")
    print(f"{'stage':<8} {'mean ms':>8} {'CV':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for k, st in enumerate(stages):
        print(f"{k:<8} {st['mean_s'] * 1e3:8.2f} {st['cv']:6.3f} {st['p50_s'] * 1e3:8.2f} "
              f"{st['p95_s'] * 1e3:8.2f}")
    print(f"{'e2e':<8} {total['mean_s'] * 1e3:8.2f} {total['cv']:6.3f} "
          f"{total['p50_s'] * 1e3:8.2f} {total['p95_s'] * 1e3:8.2f}")
    print(f"\noverhead (e2e mean - compute means) {overhead * 1e3:.2f} ms, "
          f"{hop * 1e3:.2f} ms per hop; median e2e {statistics.median(e2e) * 1e3:.2f} ms")
    lit = ", ".join(f"StageTiming({st['mean_s']:.5f}, {st['cv']:.3f}, {hop:.5f})"
                    for st in stages)
    print(f"\ncalibration.MINILM = ({lit})")
    if a.json:
        a.json.write_text(json.dumps({
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmark.sim.calibrate " + " ".join(argv or []),
            "inputs": a.inputs, "requests": a.requests, "stages": stages, "e2e": total,
            "overhead_s": overhead, "hop_s": hop, "loadavg": [load0, load1]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
