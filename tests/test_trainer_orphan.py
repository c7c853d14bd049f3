"""The trainer process does not outlive a plugin killed with -9.

Why: the soak kills the plugin; each kill left its spawned GAT trainer behind, waiting on a
queue whose pipe it holds both ends of.  A real process tree here: a python that starts the
trainer pool and runs a task in it, then SIGKILL of that python."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = """
import os, sys, time
from gateway_plugin.trainer import new_pool
pool = new_pool()
print(pool.submit(os.getpid).result(timeout=60), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_trainer_dies_with_the_plugin():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, env=env,
                            cwd=REPO, text=True)
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    assert worker != proc.pid and _alive(worker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = not _alive(worker)
    if not gone:
        os.kill(worker, signal.SIGKILL)
    assert gone, f"trainer {worker} outlived the plugin"
