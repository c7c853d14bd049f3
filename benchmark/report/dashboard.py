"""A live terminal view of a comparison while it runs (``quart-faas compare --dashboard``).

Comparisons take minutes; the people running them want to see, per system,
how far along it is, how many requests went out, came back or failed, the
rolling p50/p99 against the SLO, and how many replicas each stage has and how
deep the queues are — the picture that tells you to stop a run that is going
wrong instead of reading it in the CSV afterwards.

The simulator and the live harness call one thread-safe callback,
:meth:`Dashboard.update`, from whatever thread they run in; the view draws
from a snapshot taken under the same lock.  With ``--dashboard`` on a TTY the
view is a ``rich.live.Live`` table; otherwise (``--dashboard`` off, or output
piped to a file / CI log) it degrades to one ``tqdm`` bar per system, which
logs sensibly; ``quiet`` shows nothing.

Run ``python -m benchmark.report.dashboard_demo --demo`` to see it fed synthetic
numbers for a few seconds.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import IO, Any, Literal, Self

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

__all__ = ["Dashboard", "SystemStatus", "choose_mode"]

Mode = Literal["live", "bar", "off"]
_STATES = ("waiting", "running", "done", "failed")
_MAX_STAGE_CELLS = 6  # beyond this many stages the replicas cell shows a total
_STATE_MARKS = {
    "waiting": ("·", "dim"),
    "running": ("▶", "cyan"),
    "done": ("✓", "green"),
    "failed": ("✗", "bold red"),
}
_TIMED_BAR = "{desc}: {percentage:3.0f}%|{bar:20}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]"


@dataclass
class SystemStatus:
    """What the dashboard knows about one system; every field is settable through ``update``.

    ``progress_s`` is simulated time in sim mode and wall time in live mode,
    out of ``duration_s``.  ``p50_s``/``p99_s`` override the percentiles the
    dashboard otherwise computes from the rolling window of ``latencies_s``
    it has been fed.  ``queue_depth`` given per stage is summed.
    """

    state: str = "waiting"
    progress_s: float = 0.0
    duration_s: float | None = None
    sent: int = 0
    done: int = 0
    failed: int = 0
    p50_s: float | None = None
    p99_s: float | None = None
    replicas: dict[str, int] = field(default_factory=dict)
    queue_depth: float | None = None


_FIELDS = {f.name for f in fields(SystemStatus)} | {"latencies_s"}


_COUNTS = ("sent", "done", "failed")
_SECONDS = ("progress_s", "duration_s", "p50_s", "p99_s")


def _coerce(name: str, value: Any) -> Any:
    """One field's value in the type the view draws, or ValueError/TypeError."""
    if name == "state":
        if value not in _STATES:
            raise ValueError(f"state must be one of {_STATES}, got {value!r}")
        return value
    if name == "latencies_s":
        return [float(v) for v in value]
    if name == "replicas":
        return {str(k): int(v) for k, v in dict(value).items()}
    if name == "queue_depth" and isinstance(value, Mapping):
        value = sum(float(v) for v in value.values())
    if name in _COUNTS:
        number: float = int(value)
    elif value is None and name != "progress_s":
        return None
    else:
        number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return number


def choose_mode(dashboard: bool, file: IO[str], quiet: bool = False) -> Mode:
    """``live`` only when asked for and ``file`` is a terminal; else tqdm bars, or nothing."""
    if quiet:
        return "off"
    isatty = getattr(file, "isatty", None)
    return "live" if dashboard and callable(isatty) and isatty() else "bar"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(samples, dtype=float), [50, 99])
    return float(p50), float(p99)


def _ms(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value * 1000:,.0f}"


class Dashboard:
    """Per-system progress, fed by :meth:`update` from any thread; use as a context manager."""

    def __init__(
        self,
        systems: Iterable[str] = (),
        *,
        slo_s: float,
        duration_s: float | None = None,
        title: str = "Quart-FaaS compare",
        dashboard: bool = False,
        quiet: bool = False,
        file: IO[str] | None = None,
        window: int = 2000,
        refresh_per_second: float = 4.0,
    ) -> None:
        if not (slo_s > 0 and math.isfinite(slo_s)):
            raise ValueError(f"slo_s must be a positive number of seconds, got {slo_s!r}")
        if window < 1:
            raise ValueError("window must hold at least one latency")
        wants_live = dashboard and not quiet
        self.file: IO[str] = file or (sys.stdout if wants_live else sys.stderr)
        self.mode: Mode = choose_mode(dashboard, self.file, quiet)
        self.slo_s = slo_s
        self.duration_s = duration_s
        self.title = title
        self._window = window
        self._refresh = refresh_per_second
        self._lock = threading.RLock()
        self._status: dict[str, SystemStatus] = {}
        self._latencies: dict[str, deque[float]] = {}
        self._bars: dict[str, tqdm] = {}
        self._postfix_at: dict[str, float] = {}
        self._live: Live | None = None
        self._wall: dict[str, list[float]] = {}  # system -> [started, ended] (monotonic)
        for name in systems:
            self._register(name)

    # -- feeding --------------------------------------------------------------------------

    def _register(self, system: str) -> SystemStatus:
        if system not in self._status:
            self._status[system] = SystemStatus(duration_s=self.duration_s)
            self._latencies[system] = deque(maxlen=self._window)
        return self._status[system]

    def update(self, system: str, **fields: Any) -> None:
        """Set any :class:`SystemStatus` field of ``system``; ``latencies_s`` appends samples.

        A first update moves a waiting system to ``running``.  Every value is
        checked before any is applied, so a bad call changes nothing and
        raises here, in the caller's thread, rather than later in the render
        thread; unknown field names raise ``TypeError`` so a typo fails loudly.
        """
        unknown = set(fields) - _FIELDS
        if unknown:
            raise TypeError(
                f"unknown dashboard field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}"
            )
        clean = {name: _coerce(name, value) for name, value in fields.items()}
        with self._lock:
            status = self._register(system)
            before = status.state
            if status.state == "waiting" and "state" not in clean:
                status.state = "running"
            for name, value in clean.items():
                if name == "latencies_s":
                    self._latencies[system].extend(value)
                else:
                    setattr(status, name, value)
            now = time.monotonic()
            if status.state != "waiting":
                wall = self._wall.setdefault(system, [now, now])
                if before in ("waiting", "running"):
                    wall[1] = now  # the clock stops at the update that ends the run
            if self.mode == "bar":
                self._update_bar(system, status)

    def finish(self, system: str, failed: bool = False) -> None:
        """Mark a system done (or failed); its bar is closed, its row stays."""
        self.update(system, state="failed" if failed else "done")

    def snapshot(self) -> dict[str, tuple[SystemStatus, float, float]]:
        """A consistent copy: status and rolling (p50, p99) seconds per system."""
        with self._lock:
            out = {}
            for name, status in self._status.items():
                p50, p99 = _percentiles(list(self._latencies[name]))
                if status.p50_s is not None:
                    p50 = float(status.p50_s)
                if status.p99_s is not None:
                    p99 = float(status.p99_s)
                copy = SystemStatus(**{f.name: getattr(status, f.name) for f in fields(status)})
                copy.replicas = dict(status.replicas)
                out[name] = (copy, p50, p99)
            return out

    # -- the tqdm fallback ---------------------------------------------------------------

    def _update_bar(self, system: str, status: SystemStatus) -> None:
        bar = self._bars.get(system) or self._new_bar(system, status)
        if status.duration_s:
            bar.total = status.duration_s
            target = min(status.progress_s, status.duration_s)
        else:
            target = status.done + status.failed
        finished = status.state in ("done", "failed")
        now = time.monotonic()
        # Percentiles only as often as tqdm prints: a harness may call update per request.
        if finished or now - self._postfix_at.get(system, -math.inf) >= bar.mininterval:
            self._postfix_at[system] = now
            p50, p99 = _percentiles(list(self._latencies[system]))
            p99 = float(status.p99_s) if status.p99_s is not None else p99
            p50 = float(status.p50_s) if status.p50_s is not None else p50
            bar.set_postfix_str(self._summary_text(status, p50, p99), refresh=False)
        if finished:
            bar.n = target
            bar.close()  # prints the final line
        else:
            bar.update(target - bar.n)  # tqdm rate-limits printing by its mininterval

    def _new_bar(self, system: str, status: SystemStatus) -> tqdm:
        tty = choose_mode(True, self.file) == "live"
        bar = tqdm(
            total=status.duration_s,
            desc=system,
            unit="s" if status.duration_s else "req",
            file=self.file,
            # Off a terminal, positions would write cursor-movement codes into the log.
            position=len(self._bars) if tty else 0,
            leave=True,
            ascii=not tty,
            dynamic_ncols=tty,
            mininterval=0.25 if tty else 5.0,  # a CI log gets a line every 5 s, not a flood
            bar_format=_TIMED_BAR if status.duration_s else None,
        )
        self._bars[system] = bar
        return bar

    def _summary_text(self, status: SystemStatus, p50: float, p99: float) -> str:
        replicas = sum(status.replicas.values())
        slo = "ok" if math.isfinite(p99) and p99 <= self.slo_s else "over SLO"
        if not math.isfinite(p99):
            slo = "no data"
        queue = "—" if status.queue_depth is None else f"{status.queue_depth:.1f}"
        return (
            f"sent {status.sent} done {status.done} failed {status.failed} "
            f"p50 {_ms(p50)} ms p99 {_ms(p99)} ms ({slo}) replicas {replicas} queue {queue}"
        )

    # -- the rich view --------------------------------------------------------------------

    def render(self) -> Group:
        """The live view as a ``rich`` renderable (also usable to print a final frame).

        Laid out to fit an 80-column terminal for three stages: replicas are
        ``1/3/1`` in stage order (named in the caption); many stages collapse
        to a total.
        """
        # One space between columns (padding on the right only) keeps 3 stages inside 80 columns.
        table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold underline")
        table.add_column("System", overflow="ellipsis", max_width=16, no_wrap=True)
        table.add_column("Progress", no_wrap=True)
        table.add_column("", justify="right", no_wrap=True)
        for name in ("Sent", "Done", "Fail", "p50ms", "p99ms", "Replicas", "Queue"):
            table.add_column(name, justify="right", no_wrap=True)
        now = time.monotonic()
        stage_names: list[str] = []
        snap = self.snapshot()
        for name, (st, p50, p99) in snap.items():
            total = st.duration_s or 0.0
            bar = ProgressBar(total=total or None, completed=min(st.progress_s, total), width=8)
            if total:
                where = f"{st.progress_s:,.0f}/{total:,.0f}s"
            else:  # no duration known: wall time since the system's first update
                with self._lock:
                    start, end = self._wall.get(name, (now, now))
                running = st.state == "running"
                where = f"{(now if running else end) - start:,.0f}s wall"
            p99_style = "green" if p99 <= self.slo_s else "bold red"
            if len(st.replicas) > len(stage_names):
                stage_names = list(st.replicas)
            symbol, colour = _STATE_MARKS[st.state]
            table.add_row(
                Text.assemble((symbol, colour), " ", (name, "bold")),
                bar,
                where,
                f"{st.sent:,}",
                f"{st.done:,}",
                Text(f"{st.failed:,}", style="red" if st.failed else ""),
                _ms(p50),
                Text(_ms(p99), style=p99_style if math.isfinite(p99) else "dim"),
                self._replicas_cell(st.replicas),
                "—" if st.queue_depth is None else f"{st.queue_depth:,.1f}",
            )
        caption = "▶ running ✓ done ✗ failed · waiting"
        if any(len(st.replicas) > _MAX_STAGE_CELLS for st, _, _ in snap.values()):
            caption += "  replicas: total in N stages"
        if 1 < len(stage_names) <= _MAX_STAGE_CELLS:
            caption += "   replicas: " + "/".join(stage_names)
        table.caption = caption
        head = Text(
            f"{self.title} — SLO {self.slo_s * 1000:,.0f} ms (p99 red when over it)", style="bold"
        )
        return Group(head, table)

    @staticmethod
    def _replicas_cell(replicas: Mapping[str, int]) -> str:
        if not replicas:
            return "—"
        if len(replicas) > _MAX_STAGE_CELLS:
            return f"{sum(replicas.values()):,} in {len(replicas):,}"
        return "/".join(str(n) for n in replicas.values())

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self.mode == "live":
            console = Console(file=self.file)
            self._live = Live(
                get_renderable=self.render,
                console=console,
                refresh_per_second=self._refresh,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live view (drawing a last frame) and close any open bars."""
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
            for bar in self._bars.values():
                if not bar.disable:
                    bar.close()
