"""Measured figures the simulator samples from, each with where it was measured.

Spawn latency (time from the scale request until the gateway counts the new
replica as available), from ``quart-faas bench scaleup --trials 20`` on
this machine (2 cores, 1 torch thread, 32 tokens; README "Benchmarks"):

| stage                         | T0 ready p50 / p95 | cold ready p50 / p95 | first call |
|-------------------------------|--------------------|----------------------|------------|
| MiniLM stage 2/3 (13.5 MiB)   | 36.2 / 47.4 ms     | 2545 / 2976 ms       | +8.3 ms    |
| BERT-large stage 3/4 (288 MiB)| 40.5 / 50.7 ms     | 2851 / (3334) ms     | +36.6 ms   |

"T0" is a fork of a warm zygote on the node; "cold" is a fresh process
(import torch, load the stage).  T1/T2 fresh processes measured no faster
than cold (importing torch dominates), so a fork-capable platform placing a
replica on a node without the stage's zygote pays the cold figure too.  The
BERT-large cold p95 was not reported; (3334) assumes MiniLM's p95/p50 ratio
(1.169).  "First call" is T0 first response minus (T0 ready + warm call):
the extra work of a forked replica's first forward pass, added to the first
request each new replica serves.

Memory, from the same benchmark and DESIGN.md: a fresh process importing
torch + transformers and holding MiniLM is ~455 MB RSS (0.42 GiB); a forked
replica adds 11.1 MiB PSS (MiniLM) / 16.8 MiB (BERT-large).

Service times: MiniLM per-stage compute is measured by ``python -m
benchmark.sim.calibrate`` (``MINILM`` below, with the command line, date and
how busy the machine was); the BERT-large stage's 152.1 ms is the warm call
of the scaleup table (one request straight to a running replica, 32 tokens,
a wall time on a machine that was probably quieter); its CV is not measured
and MiniLM's is used, and its hop overhead is MiniLM's (larger activations
would cost more: an underestimate).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .dists import Draws, lognormal_from_quantiles
from .spec import PipelineSpec, StageSpec

__all__ = ["MINILM", "RIG_CALIBRATION", "SPAWN", "SpawnProfile", "StageTiming",
           "bert_large_pipeline", "minilm_pipeline", "profile", "rig_spawn", "spawn_draws"]

MIB = 1 / 1024


@dataclass(frozen=True)
class SpawnProfile:
    t0_p50_s: float
    t0_p95_s: float
    cold_p50_s: float
    cold_p95_s: float
    first_call_s: float
    source: str
    cold_cpu_s: float = 0.0  # core-seconds a cold start burns (importing torch, the stage)


SPAWN: dict[str, SpawnProfile] = {
    "minilm": SpawnProfile(0.0362, 0.0474, 2.545, 2.976, 0.0083,
                           "benchmark.studies.scaleup --trials 20, MiniLM stage 2/3"),
    "bert-large": SpawnProfile(0.0405, 0.0507, 2.851, 2.851 * 2.976 / 2.545, 0.0366,
                               "benchmark.studies.scaleup --trials 20, BERT-large stage 3/4 "
                               "(cold p95 assumed from MiniLM's p95/p50)"),
}


RIG_CALIBRATION = Path(__file__).with_name("rig_calibration.json")


@lru_cache(maxsize=4)
def rig_spawn(path: Path) -> SpawnProfile | None:
    """The rig's spawn times (``python -m benchmark.sim.calibrate --rig``), if measured."""
    try:
        d = json.loads(path.read_text())
        s = d["spawn"]
        return SpawnProfile(s["fork"]["p50_s"], s["fork"]["p95_s"], s["cold"]["p50_s"],
                            s["cold"]["p95_s"], float(s.get("first_call_s", 0.0)),
                            f"{d['command']} ({d['measured_at']})",
                            float(s["cold"].get("cpu_s_mean", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def profile(name: str) -> SpawnProfile | None:
    """A spawn profile by name: the table above, or "emulated", the rig's measured one."""
    if name == "emulated":
        return rig_spawn(RIG_CALIBRATION)
    return SPAWN.get(name)


def spawn_draws(name: str, rng: np.random.Generator) -> dict[str, Draws]:
    """Per tier ("T0", "cold") a stream of spawn latencies in seconds."""
    p = profile(name)
    if p is None:
        raise ValueError(f"unknown spawn profile {name!r}; known: {sorted(SPAWN)}, and "
                         "'emulated' once the rig is calibrated (calibrate --rig)")
    return {"T0": lognormal_from_quantiles(p.t0_p50_s, p.t0_p95_s, rng),
            "cold": lognormal_from_quantiles(p.cold_p50_s, p.cold_p95_s, rng)}


@dataclass(frozen=True)
class StageTiming:
    """One stage's compute time per request at one core, and the per-hop overhead (delay,
    and CPU at one core)."""

    mean_s: float
    cv: float
    hop_s: float
    hop_cpu_s: float = 0.0


# `python -m benchmark.sim.calibrate --requests 300` on this machine, 2026-11-23 17:14 UTC:
# 8 sentences/request, 300 sequential requests after 30 warm-up, 1 torch thread, the
# pipeline's processes and the client at nice -20 (other sessions shared the machine:
# 3.15 of their threads runnable on average, 1-min load average 5).
#          Server-Timing (wall)              thread CPU (150 in-process passes)
#   stage  mean ms  CV     p50 ms  p95 ms    mean ms  CV     wall/CPU
#   0      35.18    0.452  29.86   69.18     26.25    0.164  1.34
#   1      36.23    0.434  31.36   64.75     25.49    0.159  1.42
#   2      35.41    0.382  31.56   61.55     25.87    0.160  1.37
#   e2e    146.08 mean, 131.47 p50; overhead 39.26 ms wall
#   process CPU per request (/proc utime + stime): gateway 11.00 ms (3.67 per hop);
#   replicas 30.70, 31.67, 33.07 ms (compute + their own HTTP and codec work); at the
#   compute's slowdown (1.38x) that CPU explains all of the overhead: no separate delay.
# The simulator takes CPU per request as work (its processor sharing adds any waiting)
# and the compute's CV for its shape.  CPU figures move less with load than wall ones but
# do move: thread CPU of the compute was 25.4-31.0 ms in runs minutes apart, and the same
# run without nice (12.3 neighbour threads runnable) gave replicas 36-39 ms, gateway 13.8.
MINILM: tuple[StageTiming, ...] = (StageTiming(0.03070, 0.140, 0.0, 0.00367),
                                   StageTiming(0.03167, 0.128, 0.0, 0.00367),
                                   StageTiming(0.03307, 0.125, 0.0, 0.00367))
MINILM_SOURCE = "python -m benchmark.sim.calibrate --requests 300 (2026-11-23, nice -20)"
BERT_LARGE_STAGE_S = 0.1521


def minilm_pipeline(name: str = "minilm", slo_s: float = 0.5, replicas: int = 1,
                    timings: tuple[StageTiming, ...] | None = None) -> PipelineSpec:
    """The 3-stage MiniLM pipeline of stack.yml with its measured stage times."""
    t = timings or MINILM
    if not t:
        raise ValueError("no MiniLM calibration: run python -m benchmark.sim.calibrate")
    return PipelineSpec(name, tuple(
        StageSpec(f"{name}-stage-{i}", s.mean_s, s.cv, "lognormal", memory_gib=0.42,
                  fork_overhead_gib=11.1 * MIB, cpu=1.0, replicas=replicas, hop_s=s.hop_s,
                  hop_cpu_s=s.hop_cpu_s, spawn="minilm")
        for i, s in enumerate(t)), slo_s)


def bert_large_pipeline(name: str = "bert-large", stages: int = 4, slo_s: float = 2.0,
                        replicas: int = 1) -> PipelineSpec:
    """Synthetic BERT-large cut into ``stages`` stages of 6 layers (24 / 4), each timed like
    the measured stage 3/4."""
    cv = MINILM[0].cv if MINILM else 0.1
    hop = MINILM[-1].hop_s if MINILM else 0.0
    hop_cpu = MINILM[-1].hop_cpu_s if MINILM else 0.0
    return PipelineSpec(name, tuple(
        StageSpec(f"{name}-stage-{i}", BERT_LARGE_STAGE_S, cv, "lognormal",
                  memory_gib=0.42 + 288 * MIB, fork_overhead_gib=16.8 * MIB, cpu=1.0,
                  replicas=replicas, hop_s=hop, hop_cpu_s=hop_cpu, spawn="bert-large")
        for i in range(stages)), slo_s)
