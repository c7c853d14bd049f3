"""benchmark.report.progress: rich bars on a terminal, rate-limited plain lines in a log,
nothing when disabled; the one progress library of the project."""
from __future__ import annotations

import io
import re
import threading
from pathlib import Path

from benchmark.report.dashboard import Dashboard
from benchmark.report.progress import Bars, track

REPO = Path(__file__).resolve().parents[1]


class FakeTTY(io.StringIO):
    """A captured stream that says it is a terminal, so rich draws for real."""

    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_first_line_a_last_line_and_nothing_between_within_the_interval():
    out = io.StringIO()
    with Bars(out, log_every_s=3600) as bars:
        task = bars.add("burst", total=10, unit="req")
        for _ in range(10):
            bars.update(task, advance=1, note="ok 3")
    lines = out.getvalue().splitlines()
    assert lines == ["burst:   0% 0/10 req [0:00:00]", "burst: 100% 10/10 req [0:00:00] ok 3"]


def test_a_log_line_per_update_once_the_interval_has_passed():
    out = io.StringIO()
    bars = Bars(out, log_every_s=0)
    task = bars.add("soak", total=4, unit="s")
    bars.update(task, completed=2)
    bars.finish(task)
    bars.update(task, completed=3)  # after the end: the last line stays the last
    bars.close()
    assert out.getvalue().splitlines() == [
        "soak:   0% 0/4 s [0:00:00]", "soak:  50% 2/4 s [0:00:00]", "soak:  50% 2/4 s [0:00:00]"]
    assert "\x1b[" not in out.getvalue()


def test_without_a_total_it_counts():
    out = io.StringIO()
    with Bars(out) as bars:
        bars.update(bars.add("live-run", unit="req"), advance=7)
    assert out.getvalue().splitlines()[-1] == "live-run: 7 req [0:00:00]"


def test_disabled_shows_nothing_even_on_a_terminal():
    for out in (io.StringIO(), FakeTTY()):
        with Bars(out, disable=True) as bars:
            bars.update(bars.add("soak", total=3), completed=3, note="x")
        assert out.getvalue() == ""


def test_a_terminal_gets_rich_bars_and_they_stop():
    out = FakeTTY()
    with Bars(out, refresh_per_second=50) as bars:
        assert bars.terminal
        task = bars.add("scaleup", total=4, unit="trial")
        bars.update(task, advance=4, note="T0 ready 36 ms")
    drawn = out.getvalue()
    bars.update(task, advance=1)  # closed: nothing draws any more
    assert out.getvalue() == drawn
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "\x1b[" in out.getvalue()  # drawn in place
    assert "scaleup" in text and "100%" in text and "4/4 trial" in text
    assert "T0 ready 36 ms" in text


def test_threads_share_one_group():
    out = io.StringIO()
    with Bars(out, log_every_s=3600) as bars:
        task = bars.add("burst", total=2000, unit="req")
        threads = [threading.Thread(target=lambda: [bars.update(task, advance=1)
                                                    for _ in range(1000)]) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert out.getvalue().splitlines()[-1].startswith("burst: 100% 2000/2000 req")


def test_track_yields_everything_and_its_bar_ends_full():
    out = io.StringIO()
    assert list(track(range(5), "sequential requests", file=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue().splitlines()[-1] == "sequential requests: 100% 5/5 [0:00:00]"


def test_dashboard_off_on_a_terminal_draws_one_rich_bar_per_system():
    out = FakeTTY()
    with Dashboard(["quart", "openfaas-ce"], slo_s=0.5, duration_s=60, file=out) as dash:
        assert dash.mode == "bar"
        for name in ("quart", "openfaas-ce"):
            dash.update(name, progress_s=60.0, sent=4, done=4, latencies_s=[0.1] * 4)
            dash.finish(name)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    for name in ("quart", "openfaas-ce"):
        row = [ln for ln in text.splitlines() if ln.startswith(name)][-1]  # the last frame
        assert "100%" in row and "60/60 s" in row and "sent 4 done 4" in row, text


def test_one_progress_library():
    """rich everywhere: tqdm is neither imported by our code nor one of our dependencies."""
    ours = [p for d in ("quart_faas", "benchmark", "checks", "gateway_plugin", "local_provider",
                        "keys_manager", "functions", "planner", "scorer")
            for p in (REPO / d).rglob("*.py")]
    tqdm = re.compile(r"^\s*(from|import) tqdm\b", re.MULTILINE)
    assert [str(p) for p in ours if tqdm.search(p.read_text())] == []
