"""Plots: PNGs written with real content, hand-checked helpers, clear refusals of empty input."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from benchmark.report.plots import (
    _total_series,
    plot_cv_sweep,
    plot_latency_cdf,
    plot_replicas_over_time,
)
from benchmark.results import RunResult, TimelineRow, summarize
from tests.test_report_fixtures import WORKLOAD, fixed_result, synthetic_result


def _looks_like_a_figure(path) -> None:
    """A real PNG, of a plausible size, that is not one flat colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= 600 and height >= 300
    assert float(image[..., :3].std()) > 0.02


@pytest.fixture(scope="module")
def runs() -> list[RunResult]:
    return [
        synthetic_result("quart", seed=1, scale_ms=120, stages=2, lag_s=2, n=800, duration_s=120),
        synthetic_result(
            "openfaas-ce", seed=2, scale_ms=300, stages=2, lag_s=15, n=800, duration_s=120
        ),
    ]


def test_latency_cdf(tmp_path, runs) -> None:
    # a system with no successful request stays in the legend instead of breaking the plot
    dead = fixed_result("dead", [0, 0], [False, False])
    out = plot_latency_cdf([*runs, dead], tmp_path / "a" / "cdf.png")
    assert out == tmp_path / "a" / "cdf.png"
    _looks_like_a_figure(out)


def test_replicas_over_time(tmp_path, runs) -> None:
    _looks_like_a_figure(plot_replicas_over_time(runs, tmp_path / "replicas.png"))


def test_replicas_over_time_many_stages(tmp_path) -> None:
    many = [synthetic_result("quart", seed=3, scale_ms=100, stages=12, n=300, duration_s=60)]
    _looks_like_a_figure(plot_replicas_over_time(many, tmp_path / "many.png", max_panels=2))


def test_total_series_with_unaligned_sampling() -> None:
    # a: 2 replicas from t=0, 4 from t=10; b: 1 from t=5 (nothing before), 3 from t=12
    rows = [
        TimelineRow(0.0, "a", 2, 2),
        TimelineRow(10.0, "a", 4, 4),
        TimelineRow(5.0, "b", 1, 1),
        TimelineRow(12.0, "b", 3, 3),
    ]
    t, total = _total_series(rows)
    assert t.tolist() == [0.0, 5.0, 10.0, 12.0]
    assert total.tolist() == [2.0, 3.0, 5.0, 7.0]


def test_cv_sweep(tmp_path) -> None:
    rows = []
    for cv in (0.1, 1.0, 8.0):
        for i, name in enumerate(("quart", "openfaas-ce")):
            run = synthetic_result(
                name, seed=int(cv * 10) + i, scale_ms=100 * (1 + cv * i), n=300, duration_s=60
            )
            rows.append((cv, name, summarize(run)))
    _looks_like_a_figure(plot_cv_sweep(rows, tmp_path / "sweep.png"))


def test_plots_reject_empty_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one RunResult"):
        plot_latency_cdf([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one RunResult"):
        plot_replicas_over_time([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_cv_sweep([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plots_reject_input_with_nothing_to_draw(tmp_path) -> None:
    dead = fixed_result("dead", [0, 0], [False, False])
    with pytest.raises(ValueError, match="no system answered"):
        plot_latency_cdf([dead], tmp_path / "x.png")
    empty = RunResult(
        system="q",
        mode="sim",
        workload=dict(WORKLOAD),
        slo_s=0.1,
        arrival_s=np.array([0.0]),
        latency_s=np.array([0.05]),
        ok=np.array([True]),
    )
    with pytest.raises(ValueError, match="no result has a timeline"):
        plot_replicas_over_time([empty], tmp_path / "x.png")
    with pytest.raises(ValueError, match="unique"):
        plot_latency_cdf([dead, dead], tmp_path / "x.png")
    with pytest.raises(ValueError, match="positive"):
        plot_cv_sweep([(0.0, "q", summarize(empty))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks 'replica_seconds'"):
        plot_cv_sweep([(1.0, "q", {"p99_latency": 1.0})], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
