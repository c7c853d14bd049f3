"""Function logs: each replica's stdout/stderr, served as faas-provider's ``/system/logs``.

Replicas write their output to ``<state>/logs/<function>-<index>.log`` (both
launchers), and the provider adds its own lines there (``--- <time> ... ready
in``), as a watchdog does inside a container.  A tailer thread reads what each
live replica appended since it started, every ``POLL_S``, and stamps each
complete line with the time it was
read (a line is at most one poll late; a query reads the files first, so it
never misses what was already written).  The last ``QUART_LOG_LINES`` lines
of each function are kept in memory; the files keep everything.

The wire format is faas-provider's ``logs`` package: ``GET /system/logs`` with
query ``name`` (required), ``namespace``, ``instance``, ``tail`` (<= 0: all),
``since`` (RFC 3339) and ``follow``; the answer is NDJSON, one
``{"name", "namespace", "instance", "timestamp", "text"}`` per line, streamed
while ``follow`` lasts (until the client leaves, the function is removed, or
``QUART_LOG_FOLLOW_S`` passes, as upstream bounds it by its write timeout).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from contracts.wire import Wire
from local_provider.config import NAMESPACE
from local_provider.types import ValidationError, check_name, check_namespace

POLL_S = 0.25
LINE_MAX = 16 << 10  # a longer line is cut (and says so)
PARTIAL_FLUSH_S = 1.0  # a line without its newline is shown after this long


def note(path: Path, text: str) -> None:
    """A provider line in a replica's log, as a watchdog prints its own lines in a container
    ("--- <time> <text>", like the process launcher's start line)."""
    stamp = datetime.now(UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    try:
        with open(path, "ab") as f:  # O_APPEND: whole lines between the replica's own
            f.write(f"--- {stamp} {text}\n".encode())
    except OSError:
        pass


class LogMessage(Wire):
    """One NDJSON line of faas-provider's logs API."""

    name: str
    namespace: str
    instance: str
    timestamp: str = Field(json_schema_extra={"format": "date-time"})
    text: str


@dataclass(frozen=True)
class Message:
    seq: int
    instance: str
    at: datetime
    text: str

    def to_json(self, name: str) -> dict[str, str]:
        ts = self.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return LogMessage(name=name, namespace=NAMESPACE, instance=self.instance,
                          timestamp=ts, text=self.text).to_json()


@dataclass(frozen=True)
class LogRequest:
    name: str
    instance: str = ""
    tail: int = 0
    since: datetime | None = None
    follow: bool = False

    @classmethod
    def from_query(cls, args: Any) -> LogRequest:
        """Query parameters as faas-provider parses them (the last value of each wins)."""
        def last(key: str) -> str:
            values = args.getlist(key)
            return values[-1] if values else ""

        check_namespace(last("namespace") or None, "namespace")
        name = check_name(last("name"), "name")
        try:
            tail = int(last("tail") or 0)
        except ValueError:
            raise ValidationError("tail", "must be an integer (<= 0: every line)") from None
        since = None
        if last("since"):
            try:
                since = datetime.fromisoformat(last("since").replace("Z", "+00:00"))
            except ValueError:
                raise ValidationError("since", "must be an RFC 3339 time") from None
            if since.tzinfo is None:
                raise ValidationError("since", "must carry a time zone (Z or +hh:mm)")
        follow = last("follow").strip().lower() in ("1", "t", "true")
        return cls(name, last("instance"), tail, since, follow)

    def wants(self, m: Message) -> bool:
        return (not self.instance or m.instance == self.instance) and \
            (self.since is None or m.at >= self.since)


@dataclass
class _Watch:
    path: Path
    offset: int
    pending: bytes = b""
    pending_since: float = 0.0
    inode: int = 0


@dataclass
class _FunctionLogs:
    lines: deque[Message]
    watches: dict[str, _Watch] = field(default_factory=dict)
    removed: bool = False


class LogStore:
    """Tails replica log files into a bounded in-memory buffer per function."""

    def __init__(self, max_lines: int = 2000, now: Callable[[], datetime] | None = None) -> None:
        self.max_lines = max_lines
        self.now = now or (lambda: datetime.now(UTC))
        self.cond = threading.Condition()
        self._functions: dict[str, _FunctionLogs] = {}
        self._seq = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what to tail (the registry tells) ------------------------------------------

    def watch(self, function: str, instance: str, path: Path) -> None:
        """A replica is about to start writing to ``path``: tail it from its current end."""
        try:
            st = path.stat()
            offset, inode = st.st_size, st.st_ino
        except OSError:
            offset, inode = 0, 0
        with self.cond:
            fl = self._functions.setdefault(function, _FunctionLogs(deque(maxlen=self.max_lines)))
            fl.removed = False
            self._read(fl, instance, fl.watches.get(instance))  # the previous one's last words
            fl.watches[instance] = _Watch(path, offset, inode=inode)

    def forget(self, function: str) -> None:
        """The function was removed: its logs go with it; followers end."""
        with self.cond:
            fl = self._functions.pop(function, None)
            if fl is not None:
                fl.removed = True
            self.cond.notify_all()

    def exists(self, function: str) -> bool:
        with self.cond:
            return function in self._functions

    # -- tailing ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-tailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        with self.cond:
            added = sum(self._read(fl, inst, w) for fl in self._functions.values()
                        for inst, w in list(fl.watches.items()))
            if added:
                self.cond.notify_all()

    def _read(self, fl: _FunctionLogs, instance: str, w: _Watch | None) -> int:
        """Append what ``w``'s file gained since the last read; returns the lines added."""
        if w is None:
            return 0
        try:
            with open(w.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != w.inode or st.st_size < w.offset:  # replaced or truncated
                    w.offset, w.inode, w.pending = 0, st.st_ino, b""
                f.seek(w.offset)
                data = f.read(max(0, st.st_size - w.offset))
        except OSError:
            return 0
        w.offset += len(data)
        now_m = time.monotonic()
        *complete, rest = (w.pending + data).split(b"\n")
        if rest and (complete or not w.pending):  # a new partial line begins
            w.pending_since = now_m
        w.pending = rest
        if rest and now_m - w.pending_since > PARTIAL_FLUSH_S:
            complete.append(rest)
            w.pending = b""
        at = self.now()
        for raw in complete:
            text = raw.rstrip(b"\r").decode("utf-8", "replace")
            if len(text) > LINE_MAX:
                text = text[:LINE_MAX] + " [line cut]"
            fl.lines.append(Message(next(self._seq), instance, at, text))
        return len(complete)

    # -- queries -----------------------------------------------------------------------

    def query(self, req: LogRequest) -> tuple[list[Message], int]:
        """What is there now, oldest first, after ``since`` and ``instance``, last ``tail``;
        and the cursor a ``follow`` continues from (nothing is lost or sent twice)."""
        self.poll()
        with self.cond:
            fl = self._functions.get(req.name)
            out = [m for m in fl.lines if req.wants(m)] if fl is not None else []
            cursor = fl.lines[-1].seq if fl is not None and fl.lines else 0
        return (out[-req.tail:] if req.tail > 0 else out), cursor

    def follow(self, req: LogRequest, after: int, deadline: float,
               gone: Callable[[], bool] = lambda: False) -> Iterator[list[Message]]:
        """Batches of new lines (seq > ``after``) until the deadline, the function's removal
        or ``gone()`` (the client left)."""
        while time.monotonic() < deadline and not self._stop.is_set() and not gone():
            with self.cond:
                fl = self._functions.get(req.name)
                if fl is None or fl.removed:
                    return
                new = [m for m in fl.lines if m.seq > after and req.wants(m)]
                if not new:
                    self.cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                    continue
            after = new[-1].seq
            yield new
