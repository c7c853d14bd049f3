"""Body limits enforced while a request arrives, before its body is buffered (issue 18, 5).

Why in waitress' parser: waitress reads a whole request body into its buffer before the app
sees the request, so ``MAX_CONTENT_LENGTH`` in Flask only ever refused a body that was
already in memory (three concurrent 60 MB bodies took the gateway from 143 to 460 MB).  Here
the limit is decided from the request line and headers alone:

- the limit of ``/function/NAME`` is what that function can accept
  (``contracts.body_limits``: a stage-0 request is texts × characters, an activation the
  manifest's shapes × batch), else ``QUART_MAX_BODY_BYTES``;
- all bodies being received or served share a budget (``QUART_BODY_BUDGET_BYTES``); a
  request that does not fit is shed with a 429 and ``Retry-After``.

A refused body is never stored.  With a ``Content-Length`` up to ``QUART_MAX_BODY_BYTES``
it is read and dropped, so that the client, still sending, reads the answer on a clean
connection (closing on unread data would reset it and lose the answer); a client that asked
``Expect: 100-continue`` is answered at once and sends nothing; a larger or a chunked body
over its limit is answered and the rest of the connection's input dropped until it closes.

The request then reaches the app with no body and the refusal in a header only this parser
sets (``X-Quart-Body-Refused``, stripped from what clients send), so that the app answers it
as JSON and the gateway counts it in its metrics like any other answer.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from io import BytesIO
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser

from local_provider import memory

REFUSED_KEY = "X_QUART_BODY_REFUSED"  # waitress' key of the header below
REFUSED_ENVIRON = "HTTP_" + REFUSED_KEY
RETRY_AFTER_S = 1
TRIM_AFTER_BYTES = 1 << 20
TRIM_EVERY_S = 10.0


class BodyBudget:
    """Bytes of request bodies the process holds at once: received, being received, served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give_back(self, holder: GuardedParser) -> None:
        """All that ``holder`` took, once: the I/O thread (a connection closed mid-body) and
        a request thread (the request done) may both call it."""
        with self._lock:
            self.used -= holder.held
            holder.held = 0


class BodyGuard:
    """What the parser asks: the limit of a path (and its name), and the shared budget.

    ``limit_for(path)`` runs on waitress' I/O thread: it must answer from memory."""

    def __init__(self, limit_for: Callable[[str], tuple[int, str] | None], default_limit: int,
                 budget: BodyBudget) -> None:
        self.limit_for = limit_for
        self.default_limit = default_limit
        self.budget = budget

    def limit(self, path: str) -> tuple[int, str]:
        found = self.limit_for(path)
        return found if found is not None else (self.default_limit, "QUART_MAX_BODY_BYTES")


class _Dropped:
    """A body receiver that counts bytes and keeps none."""

    error = None

    def __init__(self, remain: int) -> None:
        self.remain = remain
        self.completed = remain <= 0

    def __len__(self) -> int:
        return 0

    def received(self, data: bytes) -> int:
        n = min(self.remain, len(data))
        self.remain -= n
        self.completed = self.remain <= 0
        return n

    def getfile(self) -> BytesIO:
        return BytesIO()

    def getbuf(self) -> BytesIO:
        return BytesIO()


def refusal(status: int, message: str, **extra: Any) -> str:
    return json.dumps({"status": status, "error": message, **extra})


class GuardedParser(HTTPRequestParser):  # type: ignore[misc]  # waitress has no types
    """waitress' parser with the limit and the budget checked as the body arrives."""

    guard: BodyGuard
    channel: GuardedChannel
    body_rcv: Any  # waitress' own attributes, typed for mypy only
    expect_continue: bool

    def __init__(self, adj: Any, guard: BodyGuard, channel: GuardedChannel) -> None:
        super().__init__(adj)
        self.guard, self.channel = guard, channel
        self.held = 0  # bytes taken from the budget
        self.max_body = 0
        self.what = ""
        self.checked = False

    def received(self, data: bytes) -> int:
        if self.channel.dropping:
            return len(data)
        n: int = super().received(data)
        if self.headers_finished and not self.checked:
            self.checked = True
            self.headers.pop(REFUSED_KEY, None)  # only this parser sets it
            self._on_headers()
        elif self.chunked and self.body_rcv is not None and not isinstance(self.body_rcv,
                                                                          _Dropped):
            self._on_chunk()
        if self.completed and isinstance(self.body_rcv, _Dropped):
            self.headers["CONTENT_LENGTH"] = "0"
        return len(data) if self.channel.dropping else n

    def _on_headers(self) -> None:
        if self.error is not None or self.body_rcv is None:
            return
        self.max_body, self.what = self.guard.limit(self.path)
        size = self.content_length
        if self.chunked:
            return
        if size > self.max_body:
            self._refuse(413, f"request body of {size} bytes is larger than the "
                              f"{self.max_body} bytes {self.what} accepts",
                         limit=self.max_body, limit_name=self.what)
        elif not self.guard.budget.take(size):
            self._shed()
        else:
            self.held = size

    def _on_chunk(self) -> None:
        size = self.body_bytes_received
        if size > self.max_body:
            self._refuse(413, f"chunked request body is larger than the {self.max_body} "
                              f"bytes {self.what} accepts",
                         limit=self.max_body, limit_name=self.what)
        elif size > self.held:
            if self.guard.budget.take(size - self.held):
                self.held = size
            else:
                self._shed()

    def _shed(self) -> None:
        self._refuse(429, "the gateway holds as many request bodies as it may "
                          "(QUART_BODY_BUDGET_BYTES); retry shortly",
                     retry_after=RETRY_AFTER_S)

    def _refuse(self, status: int, message: str, **extra: Any) -> None:
        """Answer without the body: drop what is still to come (see the module doc)."""
        self.headers[REFUSED_KEY] = refusal(status, message, **extra)
        old: Any = self.body_rcv
        expect_continue: bool = self.expect_continue
        if old is not None:
            old.getbuf().close()
        self._release()
        cl = self.content_length
        if not self.chunked and not expect_continue and cl <= self.guard.default_limit:
            self.body_rcv = _Dropped(cl - self.body_bytes_received)
            self.completed = self.body_rcv.completed
            return
        self.expect_continue = False  # no "100 Continue": the answer comes instead
        self.body_rcv = _Dropped(0)
        self.headers["CONNECTION"] = "close"
        self.completed = True
        self.channel.dropping = True

    def _release(self) -> None:
        if self.held:
            self.guard.budget.give_back(self)

    def close(self) -> None:
        big = self.held >= TRIM_AFTER_BYTES
        super().close()
        self._release()
        # a large body's buffers were just freed: give the pages back now; else now and then,
        # for the holes many threads' small allocations leave in the heap
        memory.trim(1.0 if big else TRIM_EVERY_S)


class GuardedChannel(HTTPChannel):  # type: ignore[misc]
    """A channel whose requests are parsed by ``GuardedParser``; ``dropping`` once a refused
    body's remainder can only be read and thrown away."""

    guard: BodyGuard
    dropping = False

    def parser_class(self, adj: Any) -> GuardedParser:
        """waitress calls ``self.parser_class(adj)``: a method, so that no channel holds a
        closure over itself (a cycle only the cyclic GC would free)."""
        return GuardedParser(adj, self.guard, self)

    def handle_close(self) -> None:
        with self.requests_lock:  # a body that was still arriving gives its bytes back
            pending = [r for r in [self.request, *self.requests] if r is not None]
        for r in pending:
            if isinstance(r, GuardedParser):
                r._release()
        super().handle_close()


def guarded_channel(guard: BodyGuard) -> type[GuardedChannel]:
    return type("BodyGuardedChannel", (GuardedChannel,), {"guard": guard})


def refused_body(environ: dict[str, Any]) -> dict[str, Any] | None:
    """The refusal the parser left for the app, or None."""
    raw = environ.get(REFUSED_ENVIRON)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
