"""Hand-made RunResults for the report tests (no simulator: the report must not depend on one).

Kept in a ``test_report*`` module so it sits with the tests that use it; it
holds no tests itself.
"""

from __future__ import annotations

import numpy as np

from benchmark.results import RunResult, TimelineRow

WORKLOAD = {
    "name": "bursty",
    "sha256": "ab" * 32,
    "seed": 7,
    "rps": 5.0,
    "cv": 8.0,
    "duration_s": 60.0,
}


def fixed_result(
    system: str,
    latencies_ms: list[float],
    ok: list[bool],
    *,
    slo_s: float = 0.1,
    replicas: tuple[int, int] = (1, 2),
    actions: dict[str, int] | None = None,
    recovery_s: list[float] | None = None,
    workload: dict | None = None,
) -> RunResult:
    """A tiny result whose summary can be worked out by hand.

    One stage ``s0`` sampled at t = 0, 10, 20 s: replicas ``replicas[0]`` then
    ``replicas[1]`` (twice), so replica-seconds = 10*replicas[0] + 10*replicas[1];
    queue depth 1, 3, 2 (avg 2, p95 2.9); memory 0.5, 0.7, 0.6 (avg 0.6, p95 0.69).
    Failed requests get a NaN latency, as the harness records them.
    """
    n = len(latencies_ms)
    timeline = [
        TimelineRow(0.0, "s0", replicas[0], replicas[0], queue_depth=1.0, memory_util=0.5),
        TimelineRow(10.0, "s0", replicas[1], replicas[1], queue_depth=3.0, memory_util=0.7),
        TimelineRow(20.0, "s0", replicas[1], replicas[1], queue_depth=2.0, memory_util=0.6),
    ]
    lat = np.array(latencies_ms, dtype=float) / 1000.0
    okv = np.array(ok, dtype=bool)
    lat[~okv] = np.nan
    return RunResult(
        system=system,
        mode="sim",
        workload=dict(workload or WORKLOAD),
        slo_s=slo_s,
        arrival_s=np.linspace(0.0, 19.0, n),
        latency_s=lat,
        ok=okv,
        timeline=timeline,
        actions=dict(actions or {}),
        recovery_s=list(recovery_s or []),
        start_time="2025-01-01T00:00:00",
        end_time="2025-01-01T00:01:00",
    )


def synthetic_result(
    system: str,
    *,
    seed: int,
    scale_ms: float,
    slow_stage: int = 1,
    stages: int = 3,
    n: int = 3000,
    fail_share: float = 0.01,
    lag_s: float = 10.0,
    period_s: float = 5.0,
    duration_s: float = 300.0,
) -> RunResult:
    """A plausible bursty run: lognormal latencies, replicas that follow the burst after a lag."""
    rng = np.random.default_rng(seed)
    rate = np.where((np.arange(int(duration_s)) // 60) % 2 == 1, 20.0, 4.0)  # bursts each minute
    arrivals = np.sort(rng.uniform(0, duration_s, n))
    per_s = rate[arrivals.astype(int).clip(0, len(rate) - 1)]
    keep = rng.uniform(0, 1, n) < per_s / rate.max()
    arrivals = arrivals[keep]
    m = len(arrivals)
    ok = rng.uniform(0, 1, m) >= fail_share
    lat = rng.lognormal(np.log(scale_ms / 1000.0), 0.6, m)
    lat[~ok] = np.nan
    timeline = []
    for t in np.arange(0.0, duration_s + period_s, period_s):
        load = rate[int(max(0.0, t - lag_s)) % len(rate)]
        for k in range(stages):
            want = int(np.ceil(load / (8.0 if k != slow_stage else 4.0)))
            timeline.append(
                TimelineRow(
                    float(t),
                    f"stage-{k}",
                    want,
                    want,
                    queue_depth=float(rng.poisson(load / 4)),
                    memory_util=float(rng.uniform(0.3, 0.8)),
                )
            )
    return RunResult(
        system=system,
        mode="sim",
        workload=dict(WORKLOAD),
        slo_s=0.5,
        arrival_s=arrivals,
        latency_s=lat,
        ok=ok,
        timeline=timeline,
        actions={"serve": m, "cold_start": 3, "migrate": 0},
        recovery_s=[4.0],
    )
