"""KPA and Ray Serve read what they read on their platforms: per-second average
concurrency (queue-proxies, replicas), averaged over their windows -- not one gauge
snapshot per 5 s Prometheus scrape, which misses a burst that clears between scrapes."""
from __future__ import annotations

import numpy as np

from benchmark.sim import PipelineSpec, StageSpec, run
from benchmark.systems.base import Bounds
from benchmark.systems.common import extend
from benchmark.systems.registry import SYSTEMS
from benchmark.workloads.arrivals import single_target
from tests.test_sim import BIG
from tests.test_sim_systems import Recorder

PIPE = PipelineSpec("p", (StageSpec("p-0", 0.05, 0.1, replicas=1),), slo_s=0.5)


def burst_between_scrapes():  # type: ignore[no-untyped-def]
    """30 requests at t = 11.0 s: 1.5 s of work for one replica, done before the 15 s
    scrape; one request a second otherwise, so every window has data."""
    times = np.sort(np.concatenate([np.arange(0.5, 40.0, 1.0), np.full(30, 11.0)]))
    return single_target(times, "p", {"name": "burst", "kind": "test", "seed": 0,
                                       "parameters": {}, "duration_s": 40.0})


def test_kpa_sees_a_burst_that_the_scrape_snapshot_misses() -> None:
    kpa = Recorder(SYSTEMS["knative-kpa"](Bounds(1, 20)))
    kpa.reads_concurrency = True  # type: ignore[attr-defined]
    run(burst_between_scrapes(), PIPE, kpa, cluster=BIG, seed=1)
    snapshots = [t.in_flight["p-0"] for t in kpa.ticks]
    seconds = [v for t in kpa.ticks for _, v in t.concurrency.get("p-0", ())]
    assert max(snapshots) <= 1.0  # the 10 s and 15 s scrapes bracket the burst
    assert max(seconds) > 5.0  # second 11-12 averaged ~15 requests in the stage
    # the per-second values arrive once each, in order, one per second of the run
    ends = [t for tk in kpa.ticks for t, _ in tk.concurrency.get("p-0", ())]
    assert ends == sorted(ends) and len(ends) == len(set(ends)) >= 35
    # and the panic window reacts: KPA asks for more than one pod after the burst
    assert max(out["p-0"].replicas for out in kpa.targets) > 1


def test_ray_serve_averages_the_seconds_over_its_look_back() -> None:
    ray = Recorder(SYSTEMS["ray-serve"](Bounds(1, 20), look_back_period_s=30.0))
    ray.reads_concurrency = True  # type: ignore[attr-defined]
    run(burst_between_scrapes(), PIPE, ray, cluster=BIG, seed=1)
    after = [out["p-0"].reason for tk, out in zip(ray.ticks, ray.targets, strict=True)
             if 14.0 < tk.now_s < 20.0]
    # ~15 requests for ~1 s, over 30 s: ~0.5+ ongoing, where a snapshot gave ~0
    vals = [float(r.split(" ongoing")[0]) for r in after if " ongoing" in r]
    assert vals and max(vals) > 0.4


def test_extend_keeps_the_window_and_skips_replays() -> None:
    s = extend((), ((1.0, 2.0), (2.0, 4.0)), keep_s=60.0)
    assert extend(s, ((2.0, 9.0), (3.0, 1.0)), keep_s=60.0) == ((1.0, 2.0), (2.0, 4.0),
                                                                  (3.0, 1.0))
    assert extend(s, ((70.0, 1.0),), keep_s=60.0) == ((70.0, 1.0),)
