"""The comparison table: winners by direction, ties, undefined rows, contents, rendering."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from benchmark.report.table import (
    METRICS,
    comparison_rows,
    pick_winner,
    render_plain,
    render_rich,
    report_title,
)
from benchmark.results import summarize
from tests.test_report_fixtures import fixed_result

NAN = math.nan


@pytest.mark.parametrize(
    ("values", "better", "winner"),
    [
        ([95.2, 92.8], "higher", "a"),  # seed's success-rate row
        ([125.45, 138.22], "lower", "a"),  # seed's TTFT row
        ([3.0, 1.0, 2.0], "lower", "b"),
        ([3.0, 1.0, 2.0], "higher", "a"),
        ([1.0, 1.0], "lower", "tie"),
        ([2.0, 1.0, 1.0], "lower", "tie"),  # best shared by b and c
        ([2.0, 2.0, 1.0], "higher", "tie"),
        ([2.0, 2.0, 1.0], "lower", "c"),  # a shared non-best value is no tie
        ([NAN, 5.0], "lower", "b"),  # an undefined value does not compete
        ([NAN, 5.0, 5.0], "higher", "tie"),
        ([NAN, NAN], "lower", "—"),
        ([math.inf, 1.0], "higher", "b"),  # inf is not a measurement either
    ],
)
def test_pick_winner(values: list[float], better: str, winner: str) -> None:
    names = ["a", "b", "c"][: len(values)]
    assert pick_winner(names, values, better) == winner  # type: ignore[arg-type]


def test_pick_winner_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 systems but 1 values"):
        pick_winner(["a", "b"], [1.0], "lower")
    with pytest.raises(ValueError, match="higher"):
        pick_winner(["a"], [1.0], "smaller")  # type: ignore[arg-type]


def _two_systems() -> list[dict]:
    # a: 4 answers 100..400 ms, 1 then 2 replicas -> 10*1 + 10*2 = 30 replica-s
    # b: 50, 150, 250 ms and one failure, 2 then 2 replicas -> 40 replica-s
    a = fixed_result(
        "quart",
        [100, 200, 300, 400],
        [True] * 4,
        slo_s=0.25,
        replicas=(1, 2),
        actions={"serve": 4, "cold_start": 1},
        recovery_s=[2.0, 4.0],
    )
    b = fixed_result(
        "openfaas-ce",
        [50, 150, 250, 0],
        [True, True, True, False],
        slo_s=0.25,
        replicas=(2, 2),
        actions={"serve": 3, "cold_start": 3},
    )
    return [summarize(a, "exp"), summarize(b, "exp")]


def test_rows_from_hand_made_results() -> None:
    rows = {r.key: r for r in comparison_rows(_two_systems())}
    assert [r.label for r in comparison_rows(_two_systems())] == [m.label for m in METRICS]
    # success: 4/4 vs 3/4
    assert rows["success_rate"].cells == ("100.00%", "75.00%")
    assert rows["success_rate"].winner == "quart"
    # avg latency 250 vs (50+150+250)/3 = 150 ms; failures are not averaged in
    assert rows["avg_latency"].cells == ("250.00", "150.00")
    assert rows["avg_latency"].winner == "openfaas-ce"
    # TTFT = latency for an encoder pipeline: p50 of 100..400 is 250, of 50,150,250 is 150
    assert rows["p50_ttft"].values == (250.0, 150.0)
    # SLO 250 ms, inclusive: quart 100,200 -> 2/4; openfaas-ce 50,150,250 -> 3/4
    assert rows["slo_attainment"].cells == ("50.00%", "75.00%")
    assert rows["slo_attainment"].winner == "openfaas-ce"
    assert rows["replica_seconds"].cells == ("30.0", "40.0")
    assert rows["replica_seconds"].winner == "quart"
    # identical timelines: memory 0.5/0.7/0.6 -> avg 60.0 %, queue 1/3/2 -> p95 2.90
    assert rows["avg_memory_utilization"].cells == ("60.0%", "60.0%")
    assert rows["avg_memory_utilization"].winner == "tie"
    assert rows["p95_queue_depth"].cells == ("2.90", "2.90")
    assert rows["p95_queue_depth"].winner == "tie"
    assert rows["serve_count"].winner == "quart"
    assert rows["cold_start_count"].cells == ("1", "3")
    assert rows["cold_start_count"].winner == "quart"
    assert rows["migrate_count"].winner == "tie"
    # recovery measured for quart only (mean of 2 and 4 s)
    assert rows["avg_recovery_time"].cells == ("3.00", "n/a")
    assert rows["avg_recovery_time"].winner == "quart"


def test_undefined_row_and_display_precision_ties() -> None:
    a, b = _two_systems()
    a["avg_recovery_time"] = NAN
    a["p99_latency"], b["p99_latency"] = 125.454, 125.449  # both shown as 125.45
    rows = {r.key: r for r in comparison_rows([a, b])}
    assert rows["avg_recovery_time"].winner == "—"
    assert rows["avg_recovery_time"].cells == ("n/a", "n/a")
    assert rows["p99_latency"].cells == ("125.45", "125.45")
    assert rows["p99_latency"].winner == "tie"


def test_three_systems_and_baseline_ratio() -> None:
    a, b = _two_systems()
    c = dict(b, scheduler_type="knative", avg_latency=75.0)
    rows = {r.key: r for r in comparison_rows([a, b, c], baseline="openfaas-ce")}
    assert rows["avg_latency"].winner == "knative"
    # ratios against the baseline's 150 ms: 250/150 = 1.67x, 75/150 = 0.50x
    assert rows["avg_latency"].cells == ("250.00 (1.67x)", "150.00", "75.00 (0.50x)")
    # no ratio against an undefined baseline value
    assert rows["avg_recovery_time"].cells == ("3.00", "n/a", "n/a")


def test_rows_reject_bad_input() -> None:
    a, b = _two_systems()
    with pytest.raises(ValueError, match="at least one"):
        comparison_rows([])
    with pytest.raises(ValueError, match="unique"):
        comparison_rows([a, dict(b, scheduler_type="quart")])
    with pytest.raises(ValueError, match="scheduler_type"):
        comparison_rows([a, dict(b, scheduler_type="")])
    with pytest.raises(ValueError, match="baseline"):
        comparison_rows([a, b], baseline="nope")


def test_plain_render_has_the_seed_layout() -> None:
    summaries = _two_systems()
    rows = comparison_rows(summaries)
    text = render_plain(rows, ["quart", "openfaas-ce"])
    lines = text.splitlines()
    assert lines[0] == "=" * len(lines[0]) and len(lines[0]) >= 80
    assert lines[1] == "COMPARISON REPORT: QUART VS OPENFAAS-CE"
    assert lines[4].split() == ["Metric", "quart", "openfaas-ce", "Winner"]
    assert set(lines[5]) == {"-"}
    success = next(line for line in lines if line.startswith("Success Rate (%)"))
    assert success.split()[-3:] == ["100.00%", "75.00%", "quart"]
    # columns line up: every cell starts at the header's column offset
    offset = lines[4].index("openfaas-ce")
    assert success[offset:].startswith("75.00%")
    assert lines[-1] == "=" * len(lines[0])
    assert len(lines) == 6 + len(METRICS) + 1


def test_rich_render_matches_plain_rows() -> None:
    rows = comparison_rows(_two_systems())
    console = Console(record=True, width=160, color_system=None)
    console.print(render_rich(rows, ["quart", "openfaas-ce"], title=report_title(["x", "y"])))
    text = console.export_text()
    assert "COMPARISON REPORT: X VS Y" in text
    for row in rows:
        line = next(ln for ln in text.splitlines() if row.label in ln)
        assert line.split()[-1] == row.winner
        for cell in row.cells:
            assert cell in line


def test_rich_render_does_not_parse_names_as_markup() -> None:
    a, b = _two_systems()
    rows = comparison_rows([dict(a, scheduler_type="q[bold]"), b])
    console = Console(record=True, width=160, color_system=None)
    console.print(render_rich(rows, ["q[bold]", "openfaas-ce"]))
    assert "q[bold]" in console.export_text()
