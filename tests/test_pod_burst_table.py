"""benchmark.studies.pod_burst's table: rows worked out by hand from a few samples."""
from __future__ import annotations

import numpy as np

from benchmark.live.pods import PodSample, burst_offsets
from benchmark.openloop import Result
from benchmark.studies.pod_burst import Run, summary, table


def test_rows_by_bucket_of_send_time():
    # offset 0 is rig time 10.0; buckets of 2 s: [0, 2) and [2, 4)
    results = [Result(0.5, 200, 0.1), Result(1.0, 200, 0.3), Result(2.5, 200, 0.2),
               Result(3.0, 429, 0.0)]
    samples = [PodSample(11.0, "f", "a", True, 1, 7, 500),
               PodSample(12.0, "f", "a", True, 3, 7, 750),  # the last round by t=12 (end of b0)
               PodSample(12.0, "f", "b", False, None, None, None),  # starting: not counted
               PodSample(13.5, "f", "a", True, 3, 7, 750),
               PodSample(13.5, "f", "b", True, 1, 9, 500)]
    decisions = [{"t": 11.2, "speeds": ["workers", "cpu"]}, {"t": 12.9, "speeds": ["pods"]}]
    run = Run("x", 10.0, np.array([0.5, 1.0, 2.5, 3.0]), results, samples, decisions)
    r0, r1 = table(run, 2.0)
    assert (r0["t_s"], r0["rps"], r0["pods"], r0["workers"], r0["detail"]) == \
        (0.0, 1.0, 1, 3, "3@750m")
    assert (r0["p50_ms"], r0["errors"], r0["speeds"]) == (200.0, 0, "workers+cpu")
    assert (r1["pods"], r1["workers"], r1["detail"]) == (2, 4, "3@750m 1@500m")
    assert (r1["p99_ms"], r1["errors"], r1["speeds"]) == (200.0, 1, "pods")
    s = summary(run)
    assert s["answers"] == {"200": 3, "429": 1} and s["max_pods"] == 2
    assert s["first_use_s"] == {"workers": 1.2, "cpu": 1.2, "pods": 2.9}


def test_burst_offsets_are_sorted_and_within_each_phase():
    off = burst_offsets(2.0, 20.0, 5.0, 10.0, 5.0, cv=2.0, seed=3)
    assert np.all(np.diff(off) >= 0) and off.min() >= 0 and off.max() < 20.0
    burst = np.sum((off >= 5.0) & (off < 15.0))
    assert burst > 5 * np.sum(off < 5.0)  # ten times the rate, twice the time
