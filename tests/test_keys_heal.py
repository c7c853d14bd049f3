"""keys_manager heals itself after kill -9 (found by the soak, checks/soak.py --faults).

* The agent: the provider's launcher supervises the agent it started and
  starts a new one when it dies, instead of waiting for the next scale-up
  (before, a provider stopped meanwhile left the zygotes and /dev/shm behind).
* A zygote: keys_manager warms a new one while its function still runs
  replicas, instead of making the next scale-up pay a cold start.
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from keys_manager.client import AgentError, AgentLauncher, call
from tests.test_keys_agent import Agent, embed, kill_all


def _wait(cond, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not true after {timeout_s:g}s")


def _ping(sock: Path) -> int | None:
    try:
        return int(call(sock, {"op": "ping"}, timeout_s=1)["pid"])
    except AgentError:
        return None


def test_launcher_restarts_the_agent_it_started_and_close_stops_it(tmp_path_factory):
    root = tmp_path_factory.mktemp("kh")
    shm = Path(f"/dev/shm/quart-test-{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "QUART_KEYS_METRICS_PORT": "0", "QUART_SHM_DIR": str(shm),
           "QUART_KEYS_SCRUB_S": "0"}
    launcher = AgentLauncher(root, env, restart_delay_s=0.2)
    try:
        first = launcher.ensure_agent()
        os.kill(first, signal.SIGKILL)
        second = _wait(lambda: (p := _ping(launcher.socket)) and p != first and p)
        assert second != first
        launcher.close()
        time.sleep(1.0)  # longer than the restart delay: a closed launcher restarts nothing
        assert _ping(launcher.socket) is None
        assert not shm.exists()
    finally:
        launcher.close()


def test_a_dead_zygote_is_warmed_again_while_its_function_runs(tmp_path_factory, minilm3):
    a = Agent(tmp_path_factory.mktemp("kz"))
    a.start()
    try:
        r = a.spawn(minilm3, 0)
        ref = embed(r)
        zpid = r["zygote_pid"]
        os.kill(zpid, signal.SIGKILL)

        def warm_again():
            st = a({"op": "status"})["status"]
            return [z for z in st["zygotes"] if z["alive"] and z["pid"] != zpid]

        [z] = _wait(warm_again)  # no spawn asked for it
        assert z["function"] == "cow-0"
        assert embed(r) == ref  # the replica served throughout
        again = a.spawn(minilm3, 0, index=1)
        assert again["tier"] == "T0" and again["zygote_pid"] == z["pid"]
        assert embed(again)["digest"] == ref["digest"]
    finally:
        st = a({"op": "status"})["status"]
        a.stop()
        for p in st["replicas"]:
            try:
                os.kill(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not a.shm.exists()
    assert not any(Path(f"/proc/{p['pid']}").exists() for p in st["zygotes"])


def test_replicas_being_recycled_get_no_zygote_warmed_for_them(tmp_path_factory, minilm3):
    """A scrub recycles a corrupt segment's zygote and replicas; the reaper used to see
    "replica alive, zygote gone" while a replica was still exiting, warm a zygote for it, and
    the replacement was then a T0 fork of that zygote or a T1 start of its own, by timing
    (tests/test_keys_pipeline.py failed in CI so).  A stopped replica (SIGTERM pending until
    the 2 s grace ends in SIGKILL) holds that window open for ~20 reaper periods."""
    a = Agent(tmp_path_factory.mktemp("kr"))
    a.start()
    try:
        r = a.spawn(minilm3, 0)
        ref = embed(r)
        os.kill(r["pid"], signal.SIGSTOP)
        seg = a.shm / "all-MiniLM-L6-v2--stage-0.safetensors"
        with open(seg, "r+b") as f:
            f.seek(seg.stat().st_size // 2)
            f.write(b"\xff" * 64)
        assert a({"op": "scrub"})["rebuilt"] == ["all-MiniLM-L6-v2--stage-0"]
        st = a({"op": "status"})["status"]
        assert st["recycled"] == 1 and st["replicas"] == []
        nxt = a.spawn(minilm3, 0, index=1)  # what the provider asks for next
        assert nxt["tier"] == "T1" and nxt["zygote_pid"] != r["zygote_pid"]
        [z] = a({"op": "status"})["status"]["zygotes"]
        assert z["pid"] == nxt["zygote_pid"] and z["segment"] != r["segment"]
        assert embed(nxt)["digest"] == ref["digest"]
        assert "warm again" not in (a.root / "agent.log").read_text()
    finally:
        st = a({"op": "status"})["status"]
        a.stop()
        kill_all(st)
    assert not a.shm.exists()
