"""``python -m benchmark.sim.validate --quick`` and ``validate_autoscale`` on tiny loads:
the machinery (the real rig deployed, the same arrivals live and simulated, the table,
CSV and JSON), not the 15 % / 25 % goals, which are benchmark figures."""
from __future__ import annotations

import csv
import json
import math

import pytest

from benchmark.sim import validate, validate_autoscale


def test_quick_validation_runs_live_and_simulated_on_the_same_arrivals(tmp_path, capsys
                                                                      ) -> None:  # type: ignore[no-untyped-def]
    assert validate.main(["--quick", "--sim-seeds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "goal ±15 %" in out and "cases within ±15 %" in out
    doc = json.loads((tmp_path / "validate_fixed.json").read_text())
    rows = doc["rows"]
    assert [(r["util"], r["cv"]) for r in rows] == [(0.2, 1.0), (0.5, 1.0)]
    assert doc["meta"]["time_scale"] == 20.0 and doc["meta"]["replicas"] == 1
    for r in rows:
        # every request answered live and in the simulator, on the same arrivals
        assert r["requests"] > 0 and r["live_ok"] == r["requests"] == r["sim_ok"]
        for k in ("live_p50", "live_p99", "sim_p50", "sim_p99", "ratio_p50", "ratio_p99"):
            assert math.isfinite(r[k]) and r[k] > 0, k
        # four stages of ~40 ms device time at least, whichever world
        assert r["live_p50"] > 160 and r["sim_p50"] > 160
        assert r["pass"] == (abs(r["ratio_p50"] - 1) <= 0.15 and abs(r["ratio_p99"] - 1) <= 0.15)
    with (tmp_path / "validate_fixed.csv").open() as f:
        assert [float(r["rps"]) for r in csv.DictReader(f)] == [r["rps"] for r in rows]
    raw = json.loads((tmp_path / "validate_fixed_live_requests.json").read_text())
    assert [len(c["latency_s"]) for c in raw] == [r["requests"] for r in rows]


def test_autoscale_validation_compares_p99_and_replica_seconds(tmp_path, capsys
                                                               ) -> None:  # type: ignore[no-untyped-def]
    assert validate_autoscale.main(["--systems", "openfaas-ce", "--rps", "3", "--cv", "1",
                                    "--duration", "8", "--time-scale", "10", "--sim-seeds",
                                    "1", "--out", str(tmp_path)]) == 0
    assert "systems within ±25 %" in capsys.readouterr().out
    [row] = json.loads((tmp_path / "validate_autoscale_cv1.json").read_text())["rows"]
    assert row["system"] == "openfaas-ce" and row["live_ok"] == row["requests"] > 0
    # 4 stages, at least 1 replica each, for the 8 s of arrivals, in both worlds
    assert row["live_rs"] == pytest.approx(32, rel=0.3)
    assert row["sim_rs"] >= 32 - 1e-6
    assert math.isfinite(row["ratio_p99"]) and math.isfinite(row["ratio_replica_s"])
