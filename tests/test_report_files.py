"""Report files: seed-003 CSV names and columns, JSON summary contents, the plain table."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime

import pytest

from benchmark.report.files import (
    comparison_document,
    csv_path,
    read_summary_csv,
    timestamp,
    write_report,
    write_summary_csv,
)
from benchmark.results import SUMMARY_COLUMNS, summarize
from tests.test_report_fixtures import WORKLOAD, fixed_result

STAMP = "20250102_030405"


def _results(second_sha: str | None = None):
    a = fixed_result(
        "quart",
        [100, 200, 300, 400],
        [True] * 4,
        slo_s=0.25,
        recovery_s=[2.0, 4.0],
        actions={"serve": 4},
    )
    b = fixed_result(
        "openfaas ce/v0",
        [50, 150, 250, 0],
        [True, True, True, False],
        slo_s=0.25,
        replicas=(2, 2),
        actions={"serve": 3, "cold_start": 3},
        workload=dict(WORKLOAD, sha256=second_sha) if second_sha else None,
    )
    return [a, b]


def test_timestamp_is_the_seed_format() -> None:
    assert timestamp(datetime(2025, 1, 2, 3, 4, 5)) == STAMP
    assert len(timestamp()) == len(STAMP)


def test_csv_names_follow_the_seed(tmp_path) -> None:
    assert csv_path(tmp_path, "my_exp", "quart", STAMP).name == f"my_exp_quart_{STAMP}.csv"
    # characters that are unsafe in file names are replaced, not dropped silently into paths
    assert csv_path(tmp_path, "my exp", "openfaas ce/v0", STAMP).name == (
        f"my-exp_openfaas-ce-v0_{STAMP}.csv"
    )
    with pytest.raises(ValueError, match="file name"):
        csv_path(tmp_path, "exp", "///", STAMP)


def test_csv_round_trip(tmp_path) -> None:
    summary = summarize(_results()[1], "exp")
    path = write_summary_csv(summary, tmp_path / "sub" / "x.csv")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == SUMMARY_COLUMNS and len(rows) == 2
    back = read_summary_csv(path)
    assert set(back) == set(SUMMARY_COLUMNS)
    for key in SUMMARY_COLUMNS:
        want, got = summary[key], back[key]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), key  # undefined: an empty cell, read back as NaN
        else:
            assert got == pytest.approx(want) if isinstance(want, float) else got == want, key
    assert type(back["failed_requests"]) is int and back["failed_requests"] == 1
    assert rows[1][SUMMARY_COLUMNS.index("avg_recovery_time")] == ""


def test_csv_rejects_incomplete_summary(tmp_path) -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        write_summary_csv({"scheduler_type": "x"}, tmp_path / "x.csv")


def test_write_report_files_and_json(tmp_path) -> None:
    argv = ["quart-faas", "compare", "--cv", "8", "--name", "exp one"]
    files = write_report(_results(), tmp_path / "out", "exp", command=argv, stamp=STAMP)
    assert {p.name for p in files.csv.values()} == {
        f"exp_quart_{STAMP}.csv",
        f"exp_openfaas-ce-v0_{STAMP}.csv",
    }
    assert files.json.name == f"exp_{STAMP}.json" and files.table.name == f"exp_{STAMP}.txt"
    assert read_summary_csv(files.csv["quart"])["scheduler_type"] == "quart"

    doc = json.loads(files.json.read_text())
    assert doc["command"]["argv"] == argv
    assert doc["command"]["line"] == "quart-faas compare --cv 8 --name 'exp one'"
    assert doc["workload"]["cv"] == 8.0 and doc["workload"]["name"] == "bursty"
    assert doc["arrivals_sha256"] == WORKLOAD["sha256"] and doc["identical_arrivals"] is True
    assert doc["systems"] == ["quart", "openfaas ce/v0"]
    assert doc["mode"] == ["sim"]
    quart = doc["summaries"]["quart"]
    assert quart["replica_seconds"] == 30.0 and quart["avg_recovery_time"] == 3.0
    assert doc["summaries"]["openfaas ce/v0"]["avg_recovery_time"] is None  # NaN -> null
    assert doc["winners"]["success_rate"] == {
        "label": "Success Rate (%)",
        "better": "higher",
        "winner": "quart",
        "values": {"quart": 100.0, "openfaas ce/v0": 75.0},
    }
    assert doc["winners"]["slo_attainment"]["winner"] == "openfaas ce/v0"
    assert doc["winners"]["migrate_count"]["winner"] == "tie"
    assert doc["files"]["csv"]["quart"] == f"exp_quart_{STAMP}.csv"

    text = files.table.read_text()
    assert "COMPARISON REPORT: QUART VS OPENFAAS CE/V0" in text
    assert f"arrivals sha256={WORKLOAD['sha256']}" in text
    assert "WARNING" not in text


def test_different_arrivals_are_flagged(tmp_path) -> None:
    files = write_report(_results("cd" * 32), tmp_path, "exp", command=["x"], stamp=STAMP)
    doc = json.loads(files.json.read_text())
    assert doc["identical_arrivals"] is False and doc["arrivals_sha256"] is None
    assert doc["arrivals_sha256_by_system"]["openfaas ce/v0"] == "cd" * 32
    assert "WARNING: arrivals hash missing or different" in files.table.read_text()


def test_missing_hash_is_not_identical() -> None:
    a, b = _results()
    a.workload["sha256"] = b.workload["sha256"] = ""
    doc = comparison_document([a, b], "exp", command=["x"])
    assert doc["identical_arrivals"] is False


def test_report_rejects_empty_and_duplicate_systems(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        write_report([], tmp_path, "exp")
    a, _ = _results()
    with pytest.raises(ValueError, match="unique"):
        write_report([a, a], tmp_path, "exp", stamp=STAMP)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_write_report_with_plots(tmp_path) -> None:
    files = write_report(_results(), tmp_path, "exp", command=["x"], stamp=STAMP, plots=True)
    assert {k: p.name for k, p in files.plots.items()} == {
        "latency_cdf": f"exp_latency_cdf_{STAMP}.png",
        "replicas": f"exp_replicas_{STAMP}.png",
    }
    assert all(p.stat().st_size > 10_000 for p in files.plots.values())
    doc = json.loads(files.json.read_text())
    assert doc["files"]["plots"] == {k: p.name for k, p in files.plots.items()}


def test_write_report_plots_skip_what_cannot_be_drawn(tmp_path) -> None:
    # every request failed: the report and the replicas figure are still written
    dead = fixed_result("dead", [0, 0], [False, False])
    files = write_report([dead], tmp_path, "exp", command=["x"], stamp=STAMP, plots=True)
    assert set(files.plots) == {"replicas"}
    assert files.table.exists() and files.csv["dead"].exists()
