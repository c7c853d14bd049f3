"""The live dashboard: thread-safe updates, rolling percentiles, the non-TTY fallback, the demo."""

from __future__ import annotations

import io
import threading

import pytest
from rich.console import Console

from benchmark.report.dashboard import Dashboard, choose_mode
from benchmark.report.dashboard_demo import main


class FakeTTY(io.StringIO):
    """A captured stream that says it is a terminal, so the rich Live path runs for real."""

    def isatty(self) -> bool:
        return True


def _hammer(dash: Dashboard, system: str, n: int, errors: list[BaseException]) -> None:
    try:
        for i in range(1, n + 1):
            dash.update(
                system,
                progress_s=float(i),
                sent=i,
                done=i - 1,
                failed=1,
                latencies_s=[0.01 * (i % 7)],
                replicas={"stage-0": 1 + i % 3, "stage-1": 2},
                queue_depth={"stage-0": 1.0, "stage-1": 0.5},
            )
            dash.update("shared", latencies_s=[0.2])  # both threads write one system too
        dash.finish(system)
    except BaseException as exc:  # noqa: BLE001 - the test reports any failure in the thread
        errors.append(exc)


@pytest.mark.parametrize("live", [True, False], ids=["rich-live", "bar"])
def test_updates_from_two_threads(live: bool) -> None:
    out = FakeTTY() if live else io.StringIO()
    errors: list[BaseException] = []
    with Dashboard(
        slo_s=0.1, duration_s=300, dashboard=True, file=out, window=5000, refresh_per_second=50
    ) as dash:
        assert dash.mode == ("live" if live else "bar")
        threads = [
            threading.Thread(target=_hammer, args=(dash, name, 300, errors))
            for name in ("quart", "openfaas-ce")
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors
    snap = dash.snapshot()
    for name in ("quart", "openfaas-ce"):
        status, p50, p99 = snap[name]
        assert (status.state, status.sent, status.done, status.failed) == ("done", 300, 299, 1)
        assert status.progress_s == 300.0 and status.queue_depth == 1.5
        assert status.replicas == {"stage-0": 1, "stage-1": 2}  # i = 300: 1 + 300 % 3
        assert p50 == pytest.approx(0.03) and p99 == pytest.approx(0.06)
    assert snap["shared"][1] == pytest.approx(0.2)  # 600 samples, none lost
    text = out.getvalue()
    assert "quart" in text and "openfaas-ce" in text


def test_non_tty_falls_back_to_progress_lines() -> None:
    out = io.StringIO()  # not a terminal, though --dashboard was asked for
    with Dashboard(["quart"], slo_s=0.5, duration_s=60, dashboard=True, file=out) as dash:
        assert dash.mode == "bar"
        dash.update(
            "quart",
            progress_s=30.0,
            sent=10,
            done=9,
            failed=1,
            latencies_s=[0.1] * 9,
            replicas={"s0": 2, "s1": 3},
            queue_depth=4.0,
        )
        dash.update("quart", progress_s=60.0)
        dash.finish("quart")
    text = out.getvalue()
    assert "quart: 100%" in text and "60/60 s" in text
    assert "sent 10 done 9 failed 1" in text and "p99 100 ms (ok)" in text
    assert "replicas 5 queue 4.0" in text
    assert "\x1b[" not in text  # no cursor movement or colour codes in a log file


def test_dashboard_off_uses_bars_on_a_terminal_and_quiet_prints_nothing() -> None:
    assert choose_mode(False, FakeTTY()) == "bar"
    assert choose_mode(True, FakeTTY()) == "live"
    assert choose_mode(True, io.StringIO()) == "bar"
    assert choose_mode(True, FakeTTY(), quiet=True) == "off"
    out = io.StringIO()
    with Dashboard(slo_s=0.5, quiet=True, file=out) as dash:
        dash.update("quart", sent=1, latencies_s=[0.3])
    assert out.getvalue() == "" and dash.snapshot()["quart"][0].sent == 1


def test_rolling_window_and_explicit_percentiles() -> None:
    dash = Dashboard(slo_s=0.5, quiet=True, window=10)
    dash.update("a", latencies_s=[5.0] * 50 + [0.1] * 10)  # only the last 10 are kept
    assert dash.snapshot()["a"][1:] == (pytest.approx(0.1), pytest.approx(0.1))
    # 99 at 0.1 s and one at 1.0 s: np.percentile's p99 = 0.1 + 0.01 * 0.9 = 0.109
    dash = Dashboard(slo_s=0.5, quiet=True)
    dash.update("a", latencies_s=[0.1] * 99 + [1.0])
    assert dash.snapshot()["a"][2] == pytest.approx(0.109)
    dash.update("a", p99_s=0.75)  # a harness that computes its own percentiles wins
    assert dash.snapshot()["a"][2] == 0.75


def test_states_and_bad_updates() -> None:
    dash = Dashboard(["a", "b"], slo_s=0.5, quiet=True)
    assert dash.snapshot()["a"][0].state == "waiting"
    dash.update("a", sent=1)
    assert dash.snapshot()["a"][0].state == "running"
    dash.finish("b", failed=True)
    assert dash.snapshot()["b"][0].state == "failed"
    with pytest.raises(TypeError, match="replica"):
        dash.update("a", replica={"s0": 1})  # typo of replicas
    with pytest.raises(ValueError, match="state"):
        dash.update("a", state="sleeping")
    with pytest.raises(ValueError, match="slo_s"):
        Dashboard(slo_s=0.0)
    # a bad value is refused before anything is applied: the update is all or nothing
    with pytest.raises(ValueError, match="failed must be a non-negative"):
        dash.update("a", sent=5, failed=-1)
    with pytest.raises(ValueError, match="p99_s"):
        dash.update("a", sent=5, p99_s=float("nan"))
    with pytest.raises(ValueError):
        dash.update("a", sent="many")
    assert dash.snapshot()["a"][0].sent == 1


def test_render_fits_80_columns_and_marks_the_slo() -> None:
    dash = Dashboard(slo_s=0.5, duration_s=300, quiet=True)
    dash.update(
        "quart",
        progress_s=150,
        sent=3124,
        done=3117,
        failed=7,
        latencies_s=[0.08] * 100,
        replicas={"stage-0": 1, "stage-1": 3, "stage-2": 1},
        queue_depth=2.0,
    )
    dash.update(
        "openfaas-ce",
        progress_s=120,
        sent=13124,
        done=13110,
        failed=14,
        latencies_s=[0.9] * 100,
        replicas={f"s{i}": 2 for i in range(40)},
    )
    console = Console(record=True, width=80, color_system="standard", file=io.StringIO())
    console.print(dash.render())
    text = console.export_text(clear=False)
    styled = console.export_text(styles=True)
    quart = next(line for line in text.splitlines() if "quart" in line)
    assert "150/300s" in quart and "3,124" in quart and "1/3/1" in quart and "…" not in quart
    ce = next(line for line in text.splitlines() if "openfaas-ce" in line)
    assert "900" in ce and "80 in 40" in ce and "…" not in ce
    assert "SLO 500 ms" in text
    # p99 under the SLO is green (ANSI 32), over it bold red (1;31)
    assert "\x1b[32m   80\x1b[0m" in next(ln for ln in styled.splitlines() if "quart" in ln)
    assert "\x1b[1;31m  900\x1b[0m" in next(ln for ln in styled.splitlines() if "openfaas" in ln)


def test_demo_runs(capsys) -> None:
    assert main(["--demo", "--seconds", "0.3", "--no-dashboard"]) == 0
    err = capsys.readouterr().err
    for name in ("quart", "openfaas-ce", "knative-kpa"):
        assert f"{name}: 100%" in err
    with pytest.raises(SystemExit):
        main([])


def test_wall_clock_without_a_duration(monkeypatch) -> None:
    clock = iter([100.0, 103.0, 107.0, 150.0])  # update, finish, a late update, render
    monkeypatch.setattr("benchmark.report.dashboard.time.monotonic", lambda: next(clock))
    dash = Dashboard(slo_s=0.5, quiet=True)
    dash.update("live-run", sent=3)
    dash.finish("live-run")
    dash.update("live-run", done=3)  # after the end: does not move the clock
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(dash.render())
    assert "3s wall" in console.export_text()  # finished at 103: not 107 - 100, not 150 - 100
