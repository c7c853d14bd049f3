"""Issue 18, finding 1, with `quart-faas up`/`down` and every process real: kill -9 of the
gateway under open-loop load, a crashed run followed by another `up`, replicas nobody adopts,
and nothing left behind by `down` (no process, no /dev/shm directory, no listening port).

Every process of a run carries the run's QUART_STATE_DIR in its environment (supervisor,
provider, keys_manager, zygotes, replicas), which is how leftovers are found."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from keys_manager.config import AgentConfig
from keys_manager.procs import Proc
from local_provider import services
from tests import pipeline_env

REPO = Path(__file__).resolve().parents[1]
ECHO = REPO / "tests" / "fixtures" / "echo"
STACK = """\
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  echo:
    lang: quart-python
    handler: ./echo
    image: example.com/test/echo:1
    labels:
      com.openfaas.scale.min: "2"
    environment:
      QUART_PRELOAD: ""
"""


@dataclass
class Run:
    root: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / "st"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def cli(self, *args: str) -> str:
        r = pipeline_env.cli([*args, "--state-dir", str(self.state)], self.env, timeout=300)
        assert r.returncode == 0, f"quart-faas {args[0]} failed:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def up(self) -> str:
        return self.cli("up", "-f", str(self.root / "proj" / "stack.yml"), "-g", self.gateway,
                        "--provider-port", str(self.ports["provider"]),
                        "--metrics-port", str(self.ports["metrics"]),
                        "--keys-metrics-port", str(self.ports["keys"]), "--no-prometheus",
                        "--timeout", "120")

    def provider_pid(self) -> int:
        return int(json.loads((self.state / "serve.json").read_text())["pid"])

    def supervisor_pid(self) -> int:
        return int(json.loads((self.state / "run" / "gateway.json").read_text())["pid"])

    def agent(self) -> AgentConfig:
        return AgentConfig.from_env({"QUART_STATE_DIR": str(self.state)})

    def listed_replicas(self) -> set[int]:
        """Live replicas keys_manager's state.json lists."""
        doc = json.loads((self.agent().keys_dir / "state.json").read_text())
        return {p.pid for p in map(Proc.from_json, doc["replicas"]) if p.alive()}

    def processes(self) -> dict[int, str]:
        """Every live process of this run: pid -> command line."""
        tag = f"QUART_STATE_DIR={self.state}".encode()
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if tag in (d / "environ").read_bytes().split(b"\0") and \
                            services.pid_alive(int(d.name)):
                        out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ") \
                            .decode(errors="replace")
                except OSError:
                    continue
        return out

    def listening(self) -> list[str]:
        out = []
        for name, port in self.ports.items():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                out.append(f"{name}:{port}")
            except OSError:
                pass
        return out

    def crash(self) -> None:
        """kill -9 of the whole `up` process group (supervisor and provider) at once."""
        os.killpg(self.supervisor_pid(), signal.SIGKILL)
        wait(lambda: not services.pid_alive(self.provider_pid()), 10, "the provider to die")


def wait(cond: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def run() -> Iterator[Run]:
    # short: the zygotes' Unix sockets live under the state dir (107-byte limit)
    root = Path(tempfile.mkdtemp(prefix="qsup-", dir="/tmp"))
    proj = root / "proj"
    shutil.copytree(REPO / "template" / "quart-python", proj / "template" / "quart-python")
    shutil.copytree(ECHO, proj / "echo", ignore=shutil.ignore_patterns("__pycache__"))
    (proj / "stack.yml").write_text(STACK)
    env = {**os.environ, "QUART_STATE_DIR": str(root / "st"), "PYTHONPATH": str(REPO)}
    env.pop("QUART_GATEWAY_URL", None)
    r = Run(root, env, {k: services.free_port() for k in ("gateway", "provider", "metrics",
                                                          "keys")})
    yield r
    pipeline_env.cli(["down", "--state-dir", str(r.state)], env)
    for pid in r.processes():  # a failed test must not leave its run to the next ones
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(r.agent().shm_dir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def assert_nothing_left(r: Run) -> None:
    wait(lambda: not r.processes(), 10, "every process of the run to exit")
    assert not r.agent().shm_dir.exists(), f"{r.agent().shm_dir} left behind"
    assert r.listening() == [], "ports still listening"


@dataclass
class Call:
    sent: float
    done: float = 0.0
    ok: bool = False
    pid: int = 0
    error: str = ""


class OpenLoop:
    """Calls at a fixed rate whatever the answers (open loop), each on its own connection."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.period = url, 1.0 / rate
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(64)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, c: Call) -> None:
        try:
            r = requests.post(self.url, json={"sleep_ms": 300}, timeout=60)
            c.ok, c.pid = r.status_code == 200, r.json().get("pid", 0) if r.ok else 0
            c.error = "" if c.ok else f"{r.status_code} {r.text[:80]}"
        except (requests.RequestException, ValueError) as e:
            c.error = type(e).__name__
        c.done = time.monotonic()

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            c = Call(time.monotonic())
            self.calls.append(c)
            self._pool.submit(self._one, c)
            nxt += self.period
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def __enter__(self) -> OpenLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)


def test_gateway_kill_9_under_load_is_restarted_adopts_its_replicas_and_down_stops_all(run):
    run.up()
    replicas, old = run.listed_replicas(), run.provider_pid()
    assert len(replicas) == 2
    with OpenLoop(f"{run.gateway}/function/echo", rate=5) as load:
        wait(lambda: sum(c.ok for c in load.calls) >= 10, 30, "10 calls before the kill")
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait(lambda: (run.state / "serve.json").exists() and run.provider_pid() != old, 30,
             "a new provider")
        back_at = time.monotonic()
        wait(lambda: sum(c.ok for c in load.calls if c.sent > back_at) >= 15, 30,
             "15 calls after the restart")
    calls = load.calls
    in_flight = [c for c in calls if c.sent < killed_at < (c.done or killed_at + 1)]
    lost = [c for c in calls if not c.ok]
    during = [c for c in calls if killed_at <= c.sent < back_at]
    print(f"\nkill -9 of the gateway: {len(calls)} calls at 5/s, {len(in_flight)} in flight at "
          f"the kill, {len(lost)} lost, {len(during)} sent while it restarted "
          f"({back_at - killed_at:.2f}s), all of them served")
    assert set(map(id, lost)) <= set(map(id, in_flight)), \
        [(round(c.sent - killed_at, 2), c.error) for c in lost]
    assert all(c.ok for c in calls if c.sent >= killed_at)
    # the same supervisor restarted it, the new provider adopted the same two replicas
    assert services.pid_alive(run.supervisor_pid())
    log = (run.state / "logs" / "gateway.log").read_text()
    assert f"pid {old} exited (signal SIGKILL)" in log and "restart #1" in log
    assert run.listed_replicas() == replicas
    assert {c.pid for c in calls if c.sent > back_at} == replicas
    auth = ("admin", (run.state / "basic-auth-password").read_text().strip())
    st = requests.get(f"{run.gateway}/system/function/echo", auth=auth, timeout=5).json()
    assert (st["replicas"], st["availableReplicas"]) == (2, 2)
    run.cli("down")
    assert_nothing_left(run)


@pytest.mark.parametrize("agent_too", [False, True], ids=["agent-lives", "agent-killed"])
def test_up_after_a_crashed_run_keeps_the_replica_count_and_down_stops_the_orphans(run,
                                                                                   agent_too):
    run.env["QUART_KEYS_ORPHAN_GRACE_S"] = "300"  # the orphans wait for the next `up`
    run.env["QUART_KEYS_POOL"] = "1"
    run.up()
    replicas = run.listed_replicas()
    run.crash()
    if agent_too:  # only state.json says what runs: a new agent adopts, then the provider
        agent = json.loads((run.agent().keys_dir / "agent.json").read_text())["pid"]
        os.kill(agent, signal.SIGKILL)
        wait(lambda: not services.pid_alive(agent), 10, "keys_manager to die")
    assert run.listed_replicas() == replicas  # orphans: keys_manager, zygote, replicas live on
    run.up()
    assert run.listed_replicas() == replicas, "a new up started replicas beside the orphans"
    def function_procs() -> int:
        return sum("index.py" in c for c in run.processes().values())

    # one zygote, two replicas and the warm pool's one worker (QUART_KEYS_POOL=1), refilled
    # at the agent's next tick when the agent was killed (a pooled worker dies with it)
    wait(lambda: function_procs() == 4, 15, "zygote, 2 replicas and 1 pooled worker")
    time.sleep(1.0)
    assert function_procs() == 4
    run.crash()
    out = run.cli("down")
    assert "stopped keys_manager" in out
    assert_nothing_left(run)


def test_replicas_die_with_their_provider_when_nothing_adopts_them(run):
    run.env["QUART_KEYS_ORPHAN_GRACE_S"] = "2"
    run.up()
    assert len(run.listed_replicas()) == 2
    run.crash()
    # no `down`: keys_manager's grace runs out, it stops its replicas and zygote, frees T1
    assert_wait = time.monotonic()
    wait(lambda: not run.processes(), 30, "the orphans to stop on their own")
    print(f"\norphans gone {time.monotonic() - assert_wait:.1f}s after the crash")
    assert not run.agent().shm_dir.exists()
    assert run.listening() == []
