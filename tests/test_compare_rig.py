"""`quart-faas compare --workload rig`: the emulated-accelerator pipeline in both modes.

The rig is where replicas are capacity (benchmark/rig_workload.py): its defaults (SLO 1 s,
5 replicas per stage, a 1 s scrape and the live plugin's 2 s period) must hold in the
simulator as live, or the two modes would not be comparing the same thing.  The live test
deploys stack.yml's ``emu`` pipeline twice (Quart's plugin with forks, static with process
starts) on free ports.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_compare import _outputs, compare_cli

from benchmark.compare import _bounds, main, parser
from benchmark.live.run import LiveConfig
from benchmark.rig_workload import MAX_REPLICAS, SCRAPE_S, SLO_S, TARGET
from benchmark.workloads import Arrivals


def test_rig_bounds_are_the_same_in_both_modes():
    for mode in ("sim", "live"):
        a = parser().parse_args(["--workload", "rig", "--mode", mode])
        assert _bounds(a).max_replicas == MAX_REPLICAS
    assert _bounds(parser().parse_args(["--mode", "sim"])).max_replicas == 20  # MiniLM's


def test_rig_simulated_runs_on_the_live_deployments_clocks(tmp_path):
    assert main(["--mode", "sim", "--workload", "rig", "--duration", "40", "--rps", "10",
                 "--cv", "2", "--systems", "quart,static", "--name", "rig", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    doc, rows = _outputs(tmp_path, "rig")
    assert set(rows) == {"quart", "static"}
    for row in rows.values():
        assert float(row["slo_s"]) == SLO_S
        assert float(row["success_rate"]) == 1.0
    assert doc["clocks"]["quart"]["scrape_s"] == SCRAPE_S
    assert doc["clocks"]["quart"]["period_s"] == LiveConfig.quart_period_s
    (arrivals,) = tmp_path.glob("rig_arrivals_cv2.json")
    assert list(Arrivals.load(arrivals).targets) == [TARGET]


def test_rig_clock_flags_apply_in_the_simulator(tmp_path):
    assert main(["--mode", "sim", "--workload", "rig", "--duration", "20", "--rps", "5",
                 "--cv", "1", "--systems", "quart", "--scrape-interval", "0.5",
                 "--control-period", "1", "--slo", "2", "--name", "f", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    doc, rows = _outputs(tmp_path, "f")
    assert doc["clocks"]["quart"]["scrape_s"] == 0.5 and doc["clocks"]["quart"]["period_s"] == 1
    assert float(rows["quart"]["slo_s"]) == 2.0


@pytest.mark.parametrize("args, message", [
    (["--mode", "live", "--scrape-interval", "1"], "simulator only"),
    (["--slo", "0"], "--slo"),
    (["--slo", "nan"], "--slo"),
    (["--devices", "0"], "--devices"),
])
def test_rig_bad_flags_exit_2(args, message, tmp_path, capsys):
    assert main(["--workload", "rig", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().out


def test_rig_live_compare_quart_and_static(tmp_path: Path):
    env = {**os.environ}
    env.pop("QUART_GATEWAY_URL", None)
    r = compare_cli(["--mode", "live", "--workload", "rig", "--duration", "8", "--rps", "8",
                     "--cv", "2", "--systems", "quart,static", "--name", "rl", "--no-plots",
                     "--out", str(tmp_path)], env)
    doc, rows = _outputs(tmp_path, "rl")
    assert set(rows) == {"quart", "static"}, r.stdout[-3000:]
    assert doc["identical_arrivals"] is True
    for row in rows.values():
        assert row["mode"] == "live"
        assert float(row["slo_s"]) == SLO_S
        assert float(row["success_rate"]) >= 0.9, row
        assert float(row["replica_seconds"]) > 0
    # the live plugin's predictor, read before teardown (8 s: decisions, no round yet)
    rep = doc["cv_predictors"]["quart"]
    assert "error" not in rep and rep["smoothing"] is True, rep
    assert sum(rep["periods_in_use"].values()) >= 2, rep
    assert "CV predictor" in r.stdout and "static" not in doc["cv_predictors"]


def test_live_predictor_report_has_the_simulated_shape():
    from benchmark.live.plugin_report import summarize
    from benchmark.report.predictors import predictor_lines

    rounds = [{"predictor": "gat", "validation_mae": {"gat": 0.5, "qna": 0.9},
               "holdout": "time", "trained_at": 1.0},
              {"predictor": "qna", "validation_mae": {"gat": 0.8, "qna": 0.7, "x": float("nan")},
               "holdout": "time", "trained_at": 2.0}]
    decisions = [{"t": 1.0, "predictor": "qna"}, {"t": 1.0, "predictor": "qna"},
                 {"t": 3.0, "predictor": "gat"}, {"t": 5.0, "predictor": "gat"}]
    rep = summarize({"predictor": "qna", "reason": "r", "rounds": rounds}, decisions)
    assert rep["rounds"] == 2 and rep["selected"] == {"gat": 1, "qna": 1}
    assert rep["median_validation_mae"] == {"gat": 0.65, "qna": 0.8}
    assert rep["periods_in_use"] == {"qna": 1, "gat": 2} and rep["holdout"] == ["time"]
    line = predictor_lines({"quart": rep})
    assert "2 validated training round(s) (held out by time)" in line
    assert "quart: the plugin" in predictor_lines({"quart": {"error": "the plugin is gone"}})


def test_devices_belong_to_the_rig(tmp_path, capsys):
    assert main(["--workload", "minilm", "--devices", "32", "--out", str(tmp_path)]) == 2
    assert "--devices" in capsys.readouterr().out


def test_rig_devices_reach_both_modes(tmp_path):
    from benchmark import rig_workload

    a = parser().parse_args(["--workload", "rig", "--devices", "32", "--max-replicas", "8",
                             "--slo", "1"])
    a.clocks = rig_workload.clocks(a)
    _, cluster, config = rig_workload.sim_parts(a, _bounds(a))
    assert {n.devices for n in cluster.nodes} == {32} and config.max_replicas == 8
    cfg = rig_workload.live_config(a, _bounds(a), tmp_path)
    assert cfg.extra_env["QUART_EMU_DEVICES"] == "32" and cfg.bounds.max_replicas == 8
    default = parser().parse_args(["--workload", "rig"])
    assert rig_workload.live_config(default, _bounds(default), tmp_path).extra_env[
        "QUART_EMU_DEVICES"] == "16"


@pytest.mark.parametrize("room", [[], ["--devices", "32", "--max-replicas", "8"]],
                         ids=["rig", "rig-with-room"])
def test_rig_simulated_quart_is_the_validated_model(tmp_path, room):
    """compare's simulated rig and validate_autoscale's give the same run: one model, one
    Quart (the live plugin's settings), so the validation covers what compare reports."""
    from benchmark.sim import validate_autoscale as va
    from benchmark.sim.rig import RigHost

    flags = ["--duration", "120", "--rps", "10", "--cv", "8", "--seed", "7", *room]
    names = "quart,knative-kpa,static"
    assert main(["--mode", "sim", "--workload", "rig", *flags, "--systems", names,
                 "--name", "v", "--no-plots", "--out", str(tmp_path)]) == 0
    _, rows = _outputs(tmp_path, "v")
    a = va.parse([*flags, "--systems", names, "--sim-seeds", "1"])
    arrivals = va.gamma(a.rps, a.cv, a.duration, seed=a.seed, target=TARGET)
    for name in names.split(","):
        (sim,) = va.simulated(name, a, arrivals, RigHost.load())
        assert float(rows[name]["p99_latency"]) == pytest.approx(
            float(np.percentile(sim.latency_s[sim.ok], 99)) * 1e3, rel=1e-9), name


def test_rig_static_is_planned_from_the_profile_whatever_the_seed():
    """Sized from its first seconds' observations, static's M/M/c count for stage 0 fell
    on either side of a knife edge by the simulator's seed (seed 1 of this run: 2 replicas,
    the others 3); from the profile every seed, and the live run, get one plan."""
    from benchmark.rig_workload import profiled_service_s
    from benchmark.sim import validate_autoscale as va
    from benchmark.sim.rig import RigHost

    profile = profiled_service_s()
    assert sorted(profile) == [f"{TARGET}-stage-{k}" for k in range(4)]
    assert all(0.09 < t < 0.11 for t in profile.values())  # ~100 ms of device a stage
    a = va.parse(["--cv", "8", "--devices", "32", "--max-replicas", "8", "--systems", "static",
                  "--sim-seeds", "3"])
    arrivals = va.gamma(a.rps, a.cv, a.duration, seed=a.seed, target=TARGET)
    assert va.build("static", a, arrivals).service_time_s == profile
    plans = []
    for sim in va.simulated("static", a, arrivals, RigHost.load()):
        plans.append({r.stage: r.desired for r in sorted(sim.timeline, key=lambda r: r.t_s)})
    assert plans[0] == plans[1] == plans[2], plans
    assert set(plans[0].values()) == {3}


def test_rig_quart_has_the_live_plugins_settings():
    from benchmark import rig_workload
    from benchmark.clocks import Clocks

    a = parser().parse_args(["--workload", "rig"])
    a.clocks = rig_workload.clocks(a)
    assert rig_workload.options(a, "quart") == {"period_s": LiveConfig.quart_period_s}
    assert rig_workload.options(a, "openfaas-ce") == {"scrape_interval_s": SCRAPE_S}
    a.clocks = Clocks(SCRAPE_S, 1.0)  # --control-period 1: waits kept in seconds
    assert rig_workload.options(a, "quart")["scale_down_periods"] == 15


def test_rig_held_out_table_of_short_runs(tmp_path):
    """Seeds on the rig write the median/worst table; a run shorter than the warm-up shows
    a dash for "P99 after 120 s", not nan."""
    assert main(["--mode", "sim", "--workload", "rig", "--duration", "30", "--rps", "8",
                 "--cv", "2", "--seeds", "1-2", "--systems", "quart,static", "--name", "h",
                 "--no-plots", "--out", str(tmp_path)]) == 0
    (md,) = tmp_path.glob("h_heldout_*.md")
    text = md.read_text()
    assert "seeds 1-2" in text and "quart vs best baseline (static)" in text
    assert "nan" not in text and "| — |" in text
