"""The multi-pipeline workload and the held-out report: five pipelines of depths 2-6 in
the simulator, gamma and Azure-shaped arrivals, Quart's CV predictor selections in the
comparison's JSON and text, and the median/worst-over-seeds table of ``--seeds``."""
from __future__ import annotations

import json

import numpy as np

from benchmark.compare import main, seed_list
from benchmark.sim.mix import MIX, MIX_SHARE, mix_pipelines
from benchmark.workloads.mix import mix_azure, mix_gamma


def test_the_mix_has_five_pipelines_of_depths_two_to_six_with_shared_models():
    pipes = mix_pipelines()
    assert len(pipes) >= 4
    assert sorted(len(p.stages) for p in pipes) == [2, 3, 4, 5, 6]
    times = {round(s.service_mean_s, 4) for p in pipes for s in p.stages}
    assert len(times) >= 6  # different stage times, not one stage copied
    first = {p.name: p.stages[0] for p in pipes}
    # embed and qa open with minilm-stage-0's model: same time, memory and spawn profile
    for name in ("embed", "qa"):
        a, b = first[name], first["minilm"]
        assert (a.service_mean_s, a.memory_gib, a.spawn) == (b.service_mean_s, b.memory_gib,
                                                            b.spawn)
    assert set(MIX) == set(MIX_SHARE)


def test_mix_arrivals_carry_the_cv_and_the_shares():
    for make in (mix_gamma, mix_azure):
        arr = make(10.0, 4.0, 600.0, MIX_SHARE, seed=1)
        assert set(arr.targets) == set(MIX)
        counts = {t: len(arr.for_target(t)) for t in arr.targets}
        assert counts["minilm"] > counts["bert"]  # shares 0.3 vs 0.1
        gaps = np.diff(arr.for_target("minilm"))
        assert 2.5 < gaps.std() / gaps.mean() < 6.0  # bursty, near the CV asked for
        assert abs(len(arr) / 600.0 - 10.0) < 3.0
    assert mix_gamma(10.0, 4.0, 60.0, MIX_SHARE, seed=1).sha256() != \
        mix_gamma(10.0, 4.0, 60.0, MIX_SHARE, seed=2).sha256()


def test_seed_list():
    assert seed_list("100-104", 0) == [100, 101, 102, 103, 104]
    assert seed_list("0,3,3", 0) == [0, 3]
    assert seed_list(None, 7) == [7]


def test_compare_mix_reports_predictor_selections_and_the_held_out_table(tmp_path, capsys):
    rc = main(["--mode", "sim", "--workload", "mix", "--duration", "130", "--rps", "8",
               "--cv", "4", "--systems", "quart,knative-kpa", "--seeds", "0-1",
               "--no-plots", "--out", str(tmp_path), "--name", "mixtest"])
    assert rc == 0
    docs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("mixtest_seed*.json"))
            if "arrivals" not in p.name]
    assert len(docs) == 2
    for doc in docs:
        rep = doc["cv_predictors"]["quart"]
        assert rep["rounds"] >= 1 and rep["holdout"] == ["pipelines"]
        assert sum(rep["selected"].values()) == rep["rounds"]
        assert {"gat", "qna"} <= set(rep["median_validation_mae"])
        assert "knative-kpa" not in doc["cv_predictors"]
    (held,) = tmp_path.glob("mixtest_heldout_*.json")
    cv4 = json.loads(held.read_text())["by_cv"]["4"]
    q = cv4["systems"]["quart"]
    assert q["seeds"] == [0, 1] and q["p99_worst"] >= q["p99_median"]
    assert q["cv_predictor"]["rounds"] >= 2
    assert cv4["goal"]["best_baseline"] == "knative-kpa"
    out = capsys.readouterr().out
    assert "CV predictor" in out and "selected" in out and "P99 ms median" in out
