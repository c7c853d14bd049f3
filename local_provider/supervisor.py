"""``python -m local_provider.supervisor``: run the gateway/provider, restart it when it dies.

Why (issue 18, finding 1): after ``kill -9`` of the gateway process every request was
refused and nothing restarted it.  This is systemd's ``Restart=on-failure`` with a growing
``RestartSec``, and its socket activation:

* The supervisor binds the listening sockets (``--listen NAME=HOST:PORT``) once and hands
  them to every child it starts (``QUART_SUPERVISOR_FDS``, read by ``inherited``), so a
  connection made while the child restarts waits in the kernel's backlog instead of being
  refused: only the calls in flight inside the dead process are lost.
* A child that exits on a signal or with a non-zero code is started again after 0.5 s,
  doubling up to 30 s; the count resets once a child has run ``STABLE_S``.  After
  ``MAX_FAILURES`` short-lived runs in a row the supervisor gives up (exit 1), as systemd's
  start limit does: a child that cannot start would otherwise spin forever.  A child that
  exits 0 was stopped on purpose (SIGTERM): the supervisor exits too.  Each restart is
  logged on stdout (``quart-faas up`` sends it to the gateway's log).
* The child gets ``PR_SET_PDEATHSIG`` = SIGTERM: if the supervisor itself is killed, the
  provider shuts down in order (replicas, keys_manager) instead of living on unsupervised.
  (The supervisor is single-threaded, so the signal is tied to the right thread.)

The restarted provider takes over what its predecessor left: local_provider/adopt.py.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ENV_FDS = "QUART_SUPERVISOR_FDS"
PR_SET_PDEATHSIG = 1
STABLE_S = 30.0
MAX_FAILURES = 6
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


def inherited(port: int) -> socket.socket | None:
    """The listening socket for ``port`` a supervisor handed us, if any (else bind it)."""
    for item in (os.environ.get(ENV_FDS) or "").split(","):
        p, _, fd = item.partition(":")
        if p.isdigit() and fd.isdigit() and int(p) == port and port:
            return socket.socket(fileno=os.dup(int(fd)))
    return None


def backoff_s(failures: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** max(0, failures - 1))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _say(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {msg}", flush=True)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class Supervisor:
    cmd: list[str]
    sockets: dict[int, socket.socket] = field(default_factory=dict)
    restarts: int = 0
    stopping: bool = False
    child: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def on_signal(self, signum: int, _frame: Any) -> None:
        """SIGTERM/SIGINT: pass it on to the child and do not restart it."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def start_child(self) -> subprocess.Popen[bytes]:
        fds = {port: s.fileno() for port, s in self.sockets.items()}
        env = {**os.environ, ENV_FDS: ",".join(f"{p}:{fd}" for p, fd in fds.items())}
        self.child = subprocess.Popen(self.cmd, env=env, pass_fds=tuple(fds.values()),
                                      stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        return self.child

    def run(self) -> int:
        failures = 0
        while True:
            t0 = time.monotonic()
            child = self.start_child()
            _say(f"started pid {child.pid}: {' '.join(self.cmd)}")
            code = child.wait()
            ran = time.monotonic() - t0
            if self.stopping or code == 0:
                _say(f"pid {child.pid} exited ({_exit_text(code)}); stopping")
                return 0 if self.stopping else code
            failures = 1 if ran >= STABLE_S else failures + 1
            if failures > MAX_FAILURES:
                _say(f"pid {child.pid} exited ({_exit_text(code)}) after {ran:.1f}s, "
                     f"{failures - 1} failed restarts in a row: giving up")
                return 1
            delay = backoff_s(failures)
            self.restarts += 1
            _say(f"pid {child.pid} exited ({_exit_text(code)}) after {ran:.1f}s: restart "
                 f"#{self.restarts} in {delay:g}s")
            select.select([self._wake_r], [], [], delay)  # a signal wakes it: no restart
            if self.stopping:
                return 0


def _listen(spec: str) -> tuple[int, socket.socket]:
    name, _, addr = spec.partition("=")
    host, _, port = (addr or name).rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise SystemExit(f"--listen {spec!r}: NAME=HOST:PORT with a fixed port")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return int(port), socket.create_server((host, int(port)), family=family, backlog=2048)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m local_provider.supervisor",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", action="append", default=[],
                   help="NAME=HOST:PORT, bound here and handed to each child")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to supervise")
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command to supervise (after --)")
    try:
        socks = dict(_listen(s) for s in a.listen)
    except OSError as e:
        print(f"error: cannot listen: {e}", file=sys.stderr)
        return 2
    sup = Supervisor(cmd, socks)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, sup.on_signal)
    return sup.run()


if __name__ == "__main__":
    raise SystemExit(main())
