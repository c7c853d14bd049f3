"""`quart-faas compare --scrape-interval / --control-period`: the simulated run's clocks.

The scrape interval is one for every system that reads Prometheus (Quart, OpenFaaS CE and
Pro); Quart's period is Quart's alone; Knative's and Ray Serve's own clocks never move.
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import pytest

from benchmark.clocks import Clocks, from_args
from benchmark.compare import main
from benchmark.sim.spec import SimConfig
from benchmark.systems.base import Bounds
from benchmark.systems.registry import parse_systems
from gateway_plugin.config import PluginConfig


@pytest.mark.parametrize("args, message", [
    (["--scrape-interval", "0"], "--scrape-interval must be a finite number of seconds > 0"),
    (["--scrape-interval", "-1"], "--scrape-interval must be"),
    (["--control-period", "0"], "--control-period must be"),
    (["--control-period", "-2.5"], "--control-period must be"),
    (["--control-period", "nan"], "--control-period must be"),
    (["--control-period", "inf"], "--control-period must be"),
    # a 4 s rate window cannot hold two 5 s scrapes: rate() would answer nothing
    (["--control-period", "1"], "holds fewer than two scrapes"),
    (["--scrape-interval", "6"], "holds fewer than two scrapes"),
    (["--mode", "live", "--scrape-interval", "1"], "--scrape-interval: simulator only"),
])
def test_bad_clocks_exit_2_with_a_reason(args, message, tmp_path, capsys):
    assert main([*args, "--duration", "10", "--systems", "quart,knative-kpa",
                 "--out", str(tmp_path)]) == 2
    assert message in " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert not list(tmp_path.glob("*.csv"))


def test_a_wrong_type_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--scrape-interval", "fast"])
    assert e.value.code == 2
    assert "--scrape-interval" in capsys.readouterr().err


def test_default_clocks_change_nothing():
    c = from_args(argparse.Namespace(mode="sim", scrape_interval=None, control_period=None))
    assert c == Clocks()
    assert c.sim_config() == SimConfig()
    for name in ("quart", "quart-qna", "knative-kpa", "ray-serve", "static"):
        assert c.options(name) == {}
    # the baselines that read Prometheus get today's 5 s, which is their own default
    assert c.options("openfaas-ce") == {"scrape_interval_s": 5.0}
    assert c.options("openfaas-pro-rps") == {}


def test_quart_period_keeps_the_plugins_waits_in_seconds():
    plugin = PluginConfig()
    # at the plugin's own period the options are the plugin's own settings
    assert Clocks(5.0, 5.0).options("quart") == {
        "period_s": 5.0, "scale_down_periods": plugin.scale_down_periods,
        "train_every": plugin.train_every}
    # 1 s: scale down after 15 periods (15 s), retrain every 60 periods (60 s)
    b = Bounds(1, 20)
    (q,) = parse_systems("quart", b, {"quart": Clocks(1.0, 1.0).options("quart")})
    assert (q.period_s, q.train_every, q.plugin_config.scale_down_periods) == (1.0, 60, 15)
    (qna,) = parse_systems("quart-qna", b, {"quart-qna": Clocks(1.0, 1.0).options("quart-qna")})
    assert qna.period_s == 1.0 and not qna.trains  # the ablation still never retrains
    assert Clocks(1.0, 2.5).options("knative-kpa") == {}
    assert Clocks(1.0, 2.5).options("openfaas-ce") == {"scrape_interval_s": 1.0}


def _run(out: Path, *flags: str) -> dict:
    assert main(["--mode", "sim", "--duration", "120", "--rps", "5", "--cv", "8", "--seed", "1",
                 "--systems", "quart,openfaas-ce,openfaas-pro-rps,knative-kpa,ray-serve",
                 "--name", "k", "--no-plots", "--out", str(out), *flags]) == 0
    (path,) = [p for p in glob.glob(f"{out}/k_*.json") if "arrivals" not in p]
    return json.loads(Path(path).read_text())


def test_a_shorter_scrape_gives_more_samples_and_moves_only_prometheus_readers(tmp_path):
    slow = _run(tmp_path / "slow")
    fast = _run(tmp_path / "fast", "--scrape-interval", "1", "--control-period", "1")
    s, f = slow["clocks"], fast["clocks"]
    assert {c["scrape_s"] for c in s.values()} == {5.0}
    assert {c["scrape_s"] for c in f.values()} == {1.0}  # one scrape interval for all
    # 120 s of arrivals: scrapes at 0, 5, ... vs 0, 1, ...
    assert s["quart"]["scrapes"] in (24, 25) and f["quart"]["scrapes"] >= 5 * 24 - 5
    assert f["quart"]["period_s"] == 1.0 and s["quart"]["period_s"] == 5.0
    assert f["quart"]["control_ticks"] >= 4 * s["quart"]["control_ticks"]
    assert (s["quart"]["rate_window_s"], f["quart"]["rate_window_s"]) == (10.0, 4.0)
    assert (s["openfaas-ce"]["period_s"], f["openfaas-ce"]["period_s"]) == (5.0, 1.0)  # a scrape
    # Pro reads the latest scrape on its own 5 s query period (the chart's [45s:5s] subquery)
    assert s["openfaas-pro-rps"]["period_s"] == f["openfaas-pro-rps"]["period_s"] == 5.0
    for name, period in (("knative-kpa", 2.0), ("ray-serve", 1.0)):  # their own meters
        assert s[name]["period_s"] == f[name]["period_s"] == period
        assert s[name]["control_ticks"] == f[name]["control_ticks"]
        # nothing they read comes from Prometheus: the same decisions, the same latencies
        for metric in ("p99_latency", "replica_seconds"):
            assert slow["summaries"][name][metric] == fast["summaries"][name][metric]
    assert slow["summaries"]["quart"]["p99_latency"] != fast["summaries"]["quart"]["p99_latency"]


def test_a_held_out_name_with_dots_keeps_its_name(tmp_path, monkeypatch):
    """``--name minilm_s2.5_p2.5``: the files are ``minilm_s2.5_p2.5_heldout_<stamp>.md``
    and ``.json`` (``Path.with_suffix`` used to cut the name at its first dot)."""
    from benchmark.report import heldout

    monkeypatch.setattr(heldout, "aggregate", lambda runs: {})
    md, js = heldout.write([(0, 8.0, None), (1, 8.0, None)], tmp_path, "minilm_s2.5_p2.5",
                           "20260101_000000", command=["quart-faas", "compare"])
    assert (md.name, js.name) == ("minilm_s2.5_p2.5_heldout_20260101_000000.md",
                                  "minilm_s2.5_p2.5_heldout_20260101_000000.json")
    assert md.is_file() and json.loads(js.read_text())["seeds"] == [0, 1]
