"""The supervisor alone (local_provider/supervisor.py) and keys_manager's owner watch
(keys_manager/owner.py), with real processes: a child killed with -9 is started again, a
connection made while it is down is served by the next one (the supervisor keeps the
listener), the child dies with the supervisor; an orphaned agent's grace runs out."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys_manager.owner import Owner
from local_provider import services
from local_provider.supervisor import backoff_s

REPO = Path(__file__).resolve().parents[1]
CHILD = """\
import os, sys
from local_provider.supervisor import inherited
s = inherited(int(sys.argv[1]))
assert s is not None, "no listener handed over"
while True:
    c, _ = s.accept()
    c.sendall(str(os.getpid()).encode())
    c.close()
"""


def _ask(port: int, timeout_s: float = 20.0) -> int:
    """The pid of the child that answered a fresh connection on ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as c:
        return int(c.recv(64).decode())


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    (tmp_path / "child.py").write_text(CHILD)
    log = tmp_path / "supervisor.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):  # a free port can be taken by another process before we bind it
        port = services.free_port()
        with open(log, "wb") as out:
            sup = subprocess.Popen(
                [sys.executable, "-m", "local_provider.supervisor",
                 f"--listen=x=127.0.0.1:{port}", "--", sys.executable,
                 str(tmp_path / "child.py"), str(port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _wait(lambda s=sup: "started pid" in log.read_text() or s.poll() is not None, 20,
              "the supervisor to listen")  # it binds before it starts the child
        if sup.poll() is None:
            break
    assert sup.poll() is None, log.read_text()
    yield sup, port, log
    if sup.poll() is None:
        sup.kill()
        sup.wait()


def test_a_child_killed_9_is_restarted_and_a_call_made_meanwhile_is_served(supervised):
    sup, port, log = supervised
    first = _ask(port)
    assert "started pid " + str(first) in log.read_text()
    os.kill(first, signal.SIGKILL)
    _wait(lambda: not services.pid_alive(first), 5, "the child to die")
    # made while no child runs (the restart waits 0.5 s): queued in the kept listener
    second = _ask(port)
    text = log.read_text()
    assert second != first, text
    assert f"pid {first} exited (signal SIGKILL)" in text and "restart #1 in 0.5s" in text, text
    sup.send_signal(signal.SIGTERM)  # passed on; a child stopped on purpose is not restarted
    assert sup.wait(timeout=10) == 0, log.read_text()
    _wait(lambda: not services.pid_alive(second), 5, "the child to stop")


def test_the_child_dies_with_its_supervisor(supervised):
    sup, port, _ = supervised
    child = _ask(port)
    sup.kill()  # kill -9: no handler runs, the parent-death signal stops the child
    sup.wait()
    _wait(lambda: not services.pid_alive(child), 10, "the child to die with the supervisor")
    with pytest.raises(OSError):  # nobody holds the listener any more
        _ask(port, timeout_s=2)


def test_restarts_back_off_doubling_to_a_cap():
    assert [backoff_s(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_an_orphaned_agent_waits_for_an_adopter_then_its_grace_runs_out():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = [100.0]
    owner = Owner(gone.pid, grace_s=5, clock=lambda: now[0])
    assert owner.orphaned() and not owner.expired()
    now[0] += 4.9
    assert not owner.expired()
    owner.adopt(os.getpid())  # a restarted provider took over: the grace no longer runs
    now[0] += 60
    assert not owner.orphaned() and not owner.expired()
    unowned = Owner(None, grace_s=0)
    assert not unowned.orphaned() and not unowned.expired()
    orphan = Owner(gone.pid, grace_s=5, clock=lambda: now[0])
    orphan.orphaned()
    now[0] += 5
    assert orphan.expired()
