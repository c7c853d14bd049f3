"""`quart-faas compare`: flags, identical arrivals across systems, the files it leaves.

The simulated comparison runs every autoscaler through the real policy code on
one saved arrivals file; the live one deploys the MiniLM pipeline twice (Quart's
real plugin, then the CE-style baseline through the gateway API) on free ports.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from benchmark.compare import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, message", [
    (["--systems", "quart,nosuch"], "nosuch"),
    (["--cv", "0"], "--cv"),
    (["--cv", "a,b"], "--cv"),
    (["--fail-at", "999", "--duration", "10"], "within the run"),
    (["--fail-at", "5:disk", "--duration", "10"], "KIND"),
    (["--mode", "live", "--systems", "gossip"], "simulator only"),
    (["--min-replicas", "6", "--max-replicas", "5"], "--min-replicas"),
])
def test_bad_flags_exit_2_with_a_reason(args, message, tmp_path, capsys):
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().out
    assert not list(tmp_path.glob("*.csv"))


def _outputs(out: Path, name: str) -> tuple[dict, dict[str, dict]]:
    (doc_path,) = [p for p in out.glob(f"{name}_*.json") if "arrivals" not in p.name]
    doc = json.loads(doc_path.read_text())
    rows = {}
    for p in out.glob(f"{name}_*.csv"):
        with p.open() as f:
            (row,) = list(csv.DictReader(f))
        rows[row["scheduler_type"]] = row
    return doc, rows


def test_sim_compare_runs_every_system_on_the_same_arrivals(tmp_path, capsys):
    systems = "quart,quart-mmc,openfaas-ce,openfaas-pro-rps,knative-kpa,ray-serve,static," \
              "central,gossip"
    assert main(["--mode", "sim", "--duration", "60", "--rps", "8", "--cv", "8", "--seed", "3",
                 "--systems", systems, "--name", "t", "--fail-at", "30", "--out",
                 str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    doc, rows = _outputs(tmp_path, "t")
    assert set(rows) == set(systems.split(","))
    hashes = {r["workload_sha256"] for r in rows.values()}
    assert len(hashes) == 1 and len(next(iter(hashes))) == 64
    assert doc["identical_arrivals"] is True
    assert next(iter(hashes)) in printed.replace("\n", "")
    assert "Winner" in printed
    totals = {int(r["total_requests"]) for r in rows.values()}
    assert len(totals) == 1 and totals.pop() > 100  # every system got every request
    assert list(tmp_path.glob("t_latency_cdf_*.png")) and list(tmp_path.glob("t_replicas_*.png"))
    # the failure was injected: the schedulers report a recovery time
    assert rows["central"]["avg_recovery_time"] != ""


def test_cv_sweep_writes_the_p99_and_cost_plot(tmp_path):
    assert main(["--duration", "30", "--rps", "5", "--cv", "1,8", "--systems",
                 "quart,openfaas-ce", "--name", "sweep", "--no-plots", "--out",
                 str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("sweep_cv1_*.json"))) == 1
    assert len(list(tmp_path.glob("sweep_cv8_*.json"))) == 1
    assert not list(tmp_path.glob("*.png"))  # --no-plots


def _marked(mark: str) -> list[int]:
    """Processes whose environment carries ``mark``: this test's, and only this test's
    (another run of the suite on the same machine has its own ``quart-cmp-`` dirs)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and mark.encode() in (d / "environ").read_bytes():
                found.append(int(d.name))
        except OSError:
            continue  # gone, or not ours to read
    return found


def compare_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``quart-faas compare ARGS`` as a user runs it, from the repository; asserts it
    succeeded (its output's tail in the message)."""
    r = subprocess.run([sys.executable, "-m", "quart_faas.cli", "compare", *args], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_live_compare_quart_plugin_and_ce_style_baseline(tmp_path, minilm3):
    mark = f"QUART_TEST_MARK=compare-{uuid.uuid4().hex}"
    env = {**os.environ, "QUART_MODEL_DIR": str(minilm3), "QUART_TEST_MARK": mark.split("=")[1]}
    env.pop("QUART_GATEWAY_URL", None)
    r = compare_cli(["--mode", "live", "--duration", "6", "--rps", "4", "--cv", "4",
                     "--systems", "quart,openfaas-ce", "--name", "live", "--out", str(tmp_path)],
                    env)
    doc, rows = _outputs(tmp_path, "live")
    assert set(rows) == {"quart", "openfaas-ce"}, r.stdout[-3000:]
    assert doc["identical_arrivals"] is True
    for row in rows.values():
        assert row["mode"] == "live"
        assert float(row["success_rate"]) >= 0.9, row
        assert float(row["replica_seconds"]) > 0
    # nothing left running: each system's deployment was torn down
    assert _marked(mark) == [], "processes of this compare run outlived it"
