"""Did a request reach the replica?  The answer decides whether a failed call may be retried.

A request that never reached a replica may go to another one, whatever its
method: nothing ran.  One that did reach it may not: the replica may have acted
on it, and a request that crashed one replica would crash the next.

urllib3 already tells the first kind apart when it could not open a connection
(``NewConnectionError``: refused; its ``Retry`` counts it as a *connect* error,
safe for any method).  What it cannot tell apart is a request lost on a
connection that *was* open, all three of which end as ``ProtocolError``:

1. a pooled keep-alive connection the replica had already closed (it died, or
   timed the connection out) when our request went out on it;
2. a connection the kernel accepted for a replica that then died without
   reading it (a SIGKILLed process keeps its sockets open while its memory is
   torn down, and closes them last);
3. a replica that read the request and then died.

Only 3 reached the replica.  The kernel knows which is which, and
``ReplicaConnection`` asks it before the answer is parsed (on Linux):

* a reset (ECONNRESET) before the first byte of the answer: the replica's
  socket was closed with our request still unread in it (a close with unread
  data sends RST, not FIN): case 2, or 1 when our bytes arrived first;
* end of stream before the first byte, with bytes of our request still not
  acknowledged (or a send of ours that failed, or EPIPE pending): the replica
  had closed the connection (FIN) before our request arrived, so nothing acked
  it and the replica answered it with RST: case 1;
* end of stream with every byte acknowledged: the replica's kernel took the
  request and its FIN, sent after the replica read it, acknowledges all of it:
  case 3, delivered.  (Acknowledgements, unlike the RST, need no timing: the
  ACK carried by a FIN is processed before the FIN itself.)

Cases 1 and 2 are raised as ``RequestNotRead``, a ``NewConnectionError``, so
urllib3's own ``Retry`` handles them exactly as a refused connection.  This
relies on the replica reading a whole request before acting on it, which
waitress (the template's server) does.
"""
from __future__ import annotations

import errno
import fcntl
import socket
import struct
import termios
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

# The peer closed before our bytes arrived: they were answered with a reset.
_CLOSED_FIRST = frozenset({errno.EPIPE, errno.ECONNRESET})

# One more try on a fresh connection when a request provably did not go out
# (a stale pooled connection to a live replica costs nothing more); anything
# that may have reached the replica is raised at once (``read=False``), and
# answers are never retried (no status or Retry-After handling).
FRESH_CONNECTION_RETRY = urllib3.Retry(
    total=1, connect=1, read=False, redirect=False, status=0, other=0,
    respect_retry_after_header=False, raise_on_redirect=False, raise_on_status=False)


class RequestNotRead(NewConnectionError):
    """The connection was closed or reset before the replica read the request."""


class ReplicaConnection(urllib3.connection.HTTPConnection):
    """An HTTP connection that tells "never read" from "read, then the replica died"."""

    _send_failed = False

    def putrequest(self, *args: Any, **kwargs: Any) -> None:  # starts every request
        self._send_failed = False
        super().putrequest(*args, **kwargs)

    def send(self, data: Any) -> None:
        try:
            super().send(data)
        except (BrokenPipeError, ConnectionResetError):
            # urllib3 goes on to read an answer sent before the reset (a 413, say); none
            # came when the peek below finds the stream ended: the request did not get there.
            self._send_failed = True
            raise

    # ignore[override] as urllib3's own HTTPConnection does: its HTTPResponse is not http.client's
    def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]
        sock = self.sock
        if sock is not None:
            sock.settimeout(self.timeout)  # the read timeout; a timeout stays a timeout
            try:
                first = sock.recv(1, socket.MSG_PEEK)  # waits for the answer, consumes nothing
            except (ConnectionResetError, BrokenPipeError) as e:
                raise RequestNotRead(self, f"reset before the request was read ({e})") from e
            if not first and (self._send_failed or _never_taken(sock)):
                raise RequestNotRead(self, "connection closed by the server before the request "
                                           "reached it (a stale pooled connection)")
        return super().getresponse()


def _never_taken(sock: socket.socket) -> bool:
    """At end of stream: did the peer close before our request reached it?  Then it never
    acknowledged our bytes (SIOCOUTQ: sent but unacknowledged), and answered them with RST."""
    try:
        unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]
    except OSError:  # not Linux: the pending RST is all we have
        unacked = 0
    return unacked > 0 or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in _CLOSED_FIRST


class ReplicaConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = ReplicaConnection


def delivery_pool(maxsize: int = 64) -> urllib3.PoolManager:
    """A PoolManager for plain-HTTP upstreams whose errors say whether a request went out."""
    pm = urllib3.PoolManager(num_pools=64, maxsize=maxsize, block=False,
                             retries=FRESH_CONNECTION_RETRY)
    pm.pool_classes_by_scheme = {**pm.pool_classes_by_scheme, "http": ReplicaConnectionPool}
    return pm


def root_error(e: BaseException) -> BaseException:
    """What failed, under urllib3's ``MaxRetryError`` (raised when its retries ran out)."""
    return e.reason if isinstance(e, MaxRetryError) and e.reason is not None else e


def never_sent(e: BaseException) -> bool:
    """True when the failed request provably never reached the server: retry it anywhere."""
    return isinstance(root_error(e), ConnectTimeoutError)  # NewConnectionError, RequestNotRead


def refused(e: BaseException) -> bool:
    """True when the server refused a new connection: its listening socket is closed (its
    process is dead or exiting), so it will not serve again.  Other connect failures are
    not that: a busy server may be slow to accept, this host may be out of ports."""
    r = root_error(e)
    return isinstance(r, NewConnectionError) and isinstance(r.__cause__, ConnectionRefusedError)
