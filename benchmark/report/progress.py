"""Progress bars for long work, from one library (rich) for the whole project.

The demo's burst, the soak, the simulator, the scale-up study and the dashboard's
fallback all show how far a long run is.  On a terminal each task is a ``rich.progress``
bar redrawn in place.  Anywhere else (a file, a pipe, a CI log) rich would print nothing
until the very end, so there each task gets one plain line every ``log_every_s`` seconds
and a last one when it finishes: a log shows a run is alive, without cursor movement or
colour codes.  ``disable=True`` shows nothing at all.

    with Bars() as bars:
        burst = bars.add("burst", total=n, unit="req")
        openloop.run(url, body, offsets, on_done=lambda r: bars.update(burst, advance=1))

Every method may be called from any thread.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Self, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

__all__ = ["Bars", "is_terminal", "track"]

T = TypeVar("T")


@dataclass
class _Line:
    """One task as the log lines see it."""

    desc: str
    total: float | None
    unit: str
    started: float
    completed: float = 0.0
    note: str = ""
    printed_at: float = -math.inf
    done: bool = False


class _Count(ProgressColumn):
    """``12/60 s``, or ``12 req`` when the total is unknown."""

    def render(self, task: Task) -> Text:
        return Text(_count(task.completed, task.total, task.fields.get("unit", "")))


class _Note(ProgressColumn):
    """The text after the bar: the one column that gives way on a narrow terminal, cut
    short with an ellipsis rather than squeezing the numbers or wrapping."""

    def render(self, task: Task) -> Text:
        return Text(task.fields.get("note", ""), no_wrap=True, overflow="ellipsis")


def _columns() -> list[ProgressColumn]:
    def fixed() -> Column:
        return Column(no_wrap=True)

    return [TextColumn("[bold]{task.description}", table_column=fixed()),
            BarColumn(bar_width=20), TaskProgressColumn(table_column=fixed()),
            _Count(table_column=fixed()), TimeElapsedColumn(table_column=fixed()),
            TimeRemainingColumn(table_column=fixed()), _Note()]


def _count(completed: float, total: float | None, unit: str) -> str:
    done = f"{completed:.0f}" if total is None else f"{completed:.0f}/{total:.0f}"
    return f"{done} {unit}".rstrip()


def is_terminal(file: IO[str]) -> bool:
    """What tqdm and the dashboard ask: does ``file`` say it is a terminal."""
    isatty = getattr(file, "isatty", None)
    return bool(callable(isatty) and isatty())


class Bars:
    """A group of progress bars (one per task); use as a context manager or call close()."""

    def __init__(self, file: IO[str] | None = None, *, disable: bool = False,
                 transient: bool = False, log_every_s: float = 5.0,
                 refresh_per_second: float = 4.0) -> None:
        self.file: IO[str] = file or sys.stderr
        self.disable = disable
        self.terminal = not disable and is_terminal(self.file)
        self.log_every_s = log_every_s
        # how often what is shown changes: callers may skip costly notes between refreshes
        self.interval_s = 1.0 / refresh_per_second if self.terminal else log_every_s
        self._lock = threading.Lock()
        self._lines: dict[TaskID, _Line] = {}
        self._next = 0
        self._rich: Progress | None = None
        if self.terminal:
            console = Console(file=self.file, force_terminal=True)
            self._rich = Progress(*_columns(), console=console, transient=transient,
                                  refresh_per_second=refresh_per_second)
            self._rich.start()

    def add(self, desc: str, total: float | None = None, unit: str = "") -> TaskID:
        """A new bar at 0; ``total=None`` counts without a percentage."""
        with self._lock:
            if self._rich is not None:
                return self._rich.add_task(desc, total=total, unit=unit, note="")
            task = TaskID(self._next)
            self._next += 1
            self._lines[task] = _Line(desc, total, unit, started=time.monotonic())
            self._log(self._lines[task])
            return task

    def update(self, task: TaskID, *, completed: float | None = None, advance: float = 0.0,
               total: float | None = None, note: str | None = None) -> None:
        """Move a bar to ``completed`` (or by ``advance``); ``note`` is the text after it."""
        with self._lock:
            if self._rich is not None:
                self._rich.update(task, completed=completed, advance=advance or None,
                                  total=total)
                if note is not None:
                    self._rich.update(task, note=note)
                return
            line = self._lines.get(task)
            if line is None or line.done:
                return
            line.total = line.total if total is None else total
            line.completed = (line.completed if completed is None else completed) + advance
            line.note = line.note if note is None else note
            if time.monotonic() - line.printed_at >= self.log_every_s:
                self._log(line)

    def finish(self, task: TaskID) -> None:
        """The task ended: its last state stays on screen, or is the log's last line of it."""
        with self._lock:
            if self._rich is not None:
                self._rich.stop_task(task)
                self._rich.refresh()
                return
            line = self._lines.get(task)
            if line is not None and not line.done:
                line.done = True
                self._log(line)

    def close(self) -> None:
        """Finish every task and stop drawing."""
        for task in list(self._lines):
            self.finish(task)
        with self._lock:
            if self._rich is not None:
                self._rich.stop()
                self._rich = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log(self, line: _Line) -> None:
        if self.disable:
            return
        now = time.monotonic()
        line.printed_at = now
        pct = "" if not line.total else f" {100 * min(line.completed / line.total, 1):3.0f}%"
        elapsed = timedelta(seconds=int(now - line.started))
        text = f"{line.desc}:{pct} {_count(line.completed, line.total, line.unit)} [{elapsed}]"
        print(f"{text} {line.note}".rstrip(), file=self.file, flush=True)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "", *,
          file: IO[str] | None = None, disable: bool = False,
          transient: bool = False) -> Iterator[T]:
    """Yield ``items`` with a bar that advances once per item (``len(items)`` by default)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Bars(file, disable=disable, transient=transient) as group:
        task = group.add(desc, total=total, unit=unit)
        for item in items:
            yield item
            group.update(task, advance=1)
