"""Measure BERT-large stage forward times on this machine and write the emulated stage's
calibration (``functions/stage/emulated_calibration.json``).

    python -m functions.emulated_calibrate                 # 4 stages, 8 repetitions
    python -m functions.emulated_calibrate --stages 4 --reps 8 --out PATH

Why a file and a command: the emulated-accelerator stage (``functions/stage/emulated.py``)
draws its service times from numbers measured here, and every number must say where it
came from.  The file records the machine, the command, the date and the load average; the
raw per-shape times; the fitted model; and the accelerator profiles with the published
specification each one scales to (docs/emulated-stage.md says how they combine).

What is measured: the real stage maths (``functions.stage.bert.Stage.forward``, one
torch thread, inference mode) on seeded synthetic BERT-large weights
(``partitioner.synthetic_tensor_fn``, the same as ``quart-faas partition --synthetic
bert-large``), 24 layers cut into ``--stages`` balanced stages, built in memory one stage
at a time; shapes (batch, sequence) are interleaved so that a change of background load
touches every shape alike; the times are the forward's thread CPU time (``fit`` says
why), wall times recorded beside them.  And a single-thread float32 GEMM (n x n x n), this CPU's
measured peak, the denominator of every accelerator ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from functions.models import SYNTHETIC
from functions.partitioner import split_layers, synthetic_tensor_fn
from functions.stage.bert import EMBEDDING_PARAMS, Stage, layer_param_names
from functions.stage.emulated_profile import (
    ACCELERATORS,
    CALIBRATION_FILE,
    FORMAT,
    layer_flops,
)

SHAPES = ((1, 16), (1, 64), (1, 128), (1, 256), (4, 128), (8, 128))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gemm_gflops(n: int = 2048, reps: int = 7) -> dict[str, Any]:
    """Single-thread float32 ``a @ b`` (2 n^3 FLOPs): the CPU's measured peak, on thread
    CPU time like the stage times (``fit`` says why)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm: MKL picks its kernel on the first call
    samples = []
    for _ in range(reps):
        t0 = time.thread_time()
        a @ b
        samples.append(2 * n ** 3 / (time.thread_time() - t0) / 1e9)
    return {"n": n, "reps": reps, "gflops_median": round(statistics.median(samples), 2),
            "gflops_max": round(max(samples), 2), "samples": [round(s, 2) for s in samples]}


def build_stage(stages: int, k: int, seed: int) -> Stage:
    cfg = SYNTHETIC["bert-large"]
    ranges = split_layers(cfg.num_hidden_layers, stages)
    make = synthetic_tensor_fn(cfg, seed)
    a, b = ranges[k]
    names = (EMBEDDING_PARAMS if k == 0 else []) + [p for i in range(a, b)
                                                    for p in layer_param_names(i)]
    manifest = {"config": cfg.to_dict(), "num_stages": stages, "max_seq_length": 512,
                "stages": [{"layers": list(r)} for r in ranges]}
    return Stage(manifest, k, {n: make(n) for n in names})


def measure_stage(stage: Stage, reps: int, warmup: int) -> list[dict[str, Any]]:
    """Forward times per shape; rounds interleave the shapes (see the module docstring)."""
    g = torch.Generator().manual_seed(1234)
    inputs = {}
    for b, t in SHAPES:
        x = (torch.randint(1000, 30000, (b, t), generator=g) if stage.is_first
             else torch.randn(b, t, stage.cfg.hidden_size, generator=g))
        inputs[(b, t)] = (x, torch.ones(b, t, dtype=torch.int64))
    cpu: dict[tuple[int, int], list[float]] = {s: [] for s in SHAPES}
    wall: dict[tuple[int, int], list[float]] = {s: [] for s in SHAPES}
    for r in range(warmup + reps):
        for shape in SHAPES:
            x, mask = inputs[shape]
            t0, c0 = time.perf_counter(), time.thread_time()
            h = stage.forward(x, mask)
            if stage.is_last:
                stage.pool(h, mask)
            if r >= warmup:
                cpu[shape].append(time.thread_time() - c0)
                wall[shape].append(time.perf_counter() - t0)
    layers = stage.last - stage.first
    out = []
    for (b, t), ts in cpu.items():
        med = statistics.median(ts)
        mad = statistics.median(abs(x - med) for x in ts)
        mean = statistics.fmean(ts)
        out.append({"stage": stage.index, "layers": [stage.first, stage.last], "batch": b,
                    "seq": t, "flops": layers * layer_flops(stage.cfg, b, t),
                    "median_s": med, "mean_s": mean, "cv": 1.4826 * mad / med,
                    "cv_raw": statistics.stdev(ts) / mean if len(ts) > 1 else 0.0,
                    "wall_median_s": statistics.median(wall[(b, t)]),
                    "cpu_s": [round(x, 6) for x in ts],
                    "wall_s": [round(x, 6) for x in wall[(b, t)]]})
    return out


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares, relative error: ``median_s = layers * per_layer_s + flops / G``.

    On the forward's thread CPU time, not its wall time: the host is shared, and time
    another process held the core is the host's time-sharing, not the work of the stage
    (an emulated device has no other tenant).  Medians, and a CV from the median absolute
    deviation (1.4826 MAD / median, the normal-consistent scale), so that the remaining
    interference (caches, memory bandwidth) does not dominate; means, standard
    deviations and wall times are recorded too (``mean_s``, ``cv_raw``, ``wall_s``).
    Rows are divided by their median so that the 16-token shapes weigh as much as the
    1024-token ones.  Two parameters: a per-layer fixed cost and an effective FLOP rate.
    """
    a = torch.tensor([[(r["layers"][1] - r["layers"][0]) / r["median_s"],
                       r["flops"] / r["median_s"]] for r in rows], dtype=torch.float64)
    y = torch.ones(len(rows), 1, dtype=torch.float64)
    sol = torch.linalg.lstsq(a, y).solution.flatten()
    per_layer_s, inv_rate = float(sol[0]), float(sol[1])
    errs = [((r["layers"][1] - r["layers"][0]) * per_layer_s + r["flops"] * inv_rate)
            / r["median_s"] - 1 for r in rows]
    per_shape: dict[tuple[int, int], list[float]] = {}
    for r in rows:  # seconds per layer at each shape, median over the stages
        per_shape.setdefault((r["batch"], r["seq"]), []).append(
            r["median_s"] / (r["layers"][1] - r["layers"][0]))
    cfg = SYNTHETIC["bert-large"]
    table = sorted([layer_flops(cfg, b, t), round(statistics.median(v), 7)]
                   for (b, t), v in per_shape.items())
    by_stage: dict[str, list[float]] = {}
    for r in rows:
        by_stage.setdefault(str(r["stage"]), []).append(r["cv"] ** 2)
    cv_stage = {k: round(statistics.fmean(v) ** 0.5, 4) for k, v in by_stage.items()}
    return {"model": "median_s = layers * per_layer_s + flops / (gflops_effective * 1e9)",
            "per_layer_s": per_layer_s, "gflops_effective": 1 / inv_rate / 1e9,
            "per_layer_table": table,
            "per_layer_table_use": "[layer FLOPs, seconds per layer] at each measured shape "
                                   "(median over stages); the stage interpolates linearly in "
                                   "FLOPs, holds the first value below it (the weights' read "
                                   "dominates small shapes) and extends the last at "
                                   "gflops_effective above it",
            "max_abs_rel_error": round(max(abs(e) for e in errs), 4),
            "rel_errors": [round(e, 4) for e in errs],
            "cv_by_stage": cv_stage,
            "cv": round(statistics.fmean([r["cv"] ** 2 for r in rows]) ** 0.5, 4),
            "cv_method": "root mean square over shapes of 1.4826 * MAD / median"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m functions.emulated_calibrate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", type=int, default=4)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    started = datetime.now(UTC)
    gemm = gemm_gflops()
    print(f"gemm: {gemm['gflops_median']} GFLOPS (1 thread)", flush=True)
    rows: list[dict[str, Any]] = []
    for k in range(a.stages):
        stage = build_stage(a.stages, k, a.seed)
        rows += measure_stage(stage, a.reps, a.warmup)
        del stage
        for r in rows[-len(SHAPES):]:
            print(f"stage {k} b={r['batch']} t={r['seq']}: median {r['median_s'] * 1e3:.1f} ms "
                  f"cv {r['cv']:.3f} (raw {r['cv_raw']:.3f})", flush=True)
    gemm_after = gemm_gflops()
    f = fit(rows)
    accels = {}
    for name, spec in ACCELERATORS.items():
        peak = spec["peak_tflops"] * 1e3 if spec["peak_tflops"] else gemm["gflops_median"]
        accels[name] = {**spec, "ratio": gemm["gflops_median"] / peak}
    doc = {
        "format": FORMAT, "model": "bert-large", "config": SYNTHETIC["bert-large"].to_dict(),
        "generated": {
            "date": started.isoformat(timespec="seconds"),
            "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
            "command": "python -m functions.emulated_calibrate " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "node": platform.node(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "torch_threads": 1, "loadavg_before": [round(x, 2) for x in load0],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "weights": f"synthetic bert-large, seed {a.seed} (partitioner.synthetic_tensor_fn)",
            "stages": a.stages, "reps": a.reps, "warmup": a.warmup,
            "shapes": [list(s) for s in SHAPES]},
        "cpu_gemm": gemm, "cpu_gemm_after": gemm_after, "fit": f, "accelerators": accels,
        "measurements": rows,
    }
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"fit: {f['per_layer_s'] * 1e3:.3f} ms/layer + FLOPs at {f['gflops_effective']:.1f} "
          f"GFLOPS (max error {f['max_abs_rel_error']:.1%}), cv {f['cv']}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
