"""keys_manager's warm pool with real processes: a real agent, a real zygote mapping real
MiniLM weights, idle workers pre-forked from it and handed over as replicas."""
from __future__ import annotations

import os
import signal
import time

import pytest

from keys_manager.client import AgentError
from keys_manager.procs import alive
from tests.test_keys_agent import Agent, embed, kill_all


def wait_for(pred, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def idle(agent: Agent, fn: str) -> list[dict]:
    return agent({"op": "status"})["status"]["pool"]["idle"].get(fn, [])


@pytest.fixture
def pooled_agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("kp"))
    a.env["QUART_KEYS_POOL"] = "1"
    a.start()
    yield a
    st = a({"op": "status"})["status"] if a.proc.poll() is None else None
    a.stop()
    if st:
        kill_all(st)
        for ws in st["pool"]["idle"].values():
            for w in ws:
                assert not alive(w["pid"], w["started"]), "a pooled worker outlived its agent"
    assert not a.shm.exists(), "T1 left behind in /dev/shm"


def test_hand_over_gives_a_replica_answering_like_a_warm_one_and_the_pool_refills(
        pooled_agent, minilm3):
    agent = pooled_agent
    first = agent.spawn(minilm3, 1)  # starts the zygote; the pool fills behind it
    warm = embed(first)
    w = wait_for(lambda: idle(agent, "cow-1"), what="a pooled worker")[0]
    assert w["zygote_pid"] == first["zygote_pid"]
    second = agent.spawn(minilm3, 1, index=1)
    assert second["pid"] == w["pid"] and second["pooled"] and second["tier"] == "T0"
    assert second["spawn_ms"] < 50  # a hand-over, not a fork plus a server start
    got = embed(second)
    assert got["digest"] == warm["digest"] and got["head"] == warm["head"]
    log = agent.root / "logs" / "cow-1-1.log"  # the replica's own log from the hand-over on
    assert log.is_file()
    refill = wait_for(lambda: [x for x in idle(agent, "cow-1") if x["pid"] != w["pid"]],
                      what="the pool to refill")[0]
    assert refill["zygote_pid"] == first["zygote_pid"]
    st = agent({"op": "status"})["status"]
    assert st["cache"]["pinned"] == {"all-MiniLM-L6-v2--stage-1": 2}
    assert st["pool"]["handed_over"] == 1 and st["pool"]["pss_bytes"]["cow-1"] > 0
    assert sorted(r["pid"] for r in st["replicas"]) == sorted([first["pid"], second["pid"]])


def test_pool_size_is_set_per_function_and_a_dead_worker_is_replaced(pooled_agent, minilm3):
    agent = pooled_agent
    agent.spawn(minilm3, 2)
    wait_for(lambda: len(idle(agent, "cow-2")) == 1, what="one pooled worker")
    agent({"op": "pool", "function": "cow-2", "size": 3})
    three = wait_for(lambda: (ws := idle(agent, "cow-2")) and len(ws) == 3 and ws,
                     what="three pooled workers")
    victim = three[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: (ws := idle(agent, "cow-2")) and len(ws) == 3 and
             victim["pid"] not in [x["pid"] for x in ws], what="the dead worker replaced")
    agent({"op": "pool", "function": "cow-2", "size": 0})
    assert idle(agent, "cow-2") == []
    assert wait_for(lambda: not any(alive(x["pid"], x["started"]) for x in three),
                    what="surplus workers gone")
    with pytest.raises(AgentError, match="pool size"):
        agent({"op": "pool", "function": "cow-2", "size": -1})
    with pytest.raises(AgentError, match="function name"):
        agent({"op": "pool", "function": "../x", "size": 1})


def test_a_pooled_worker_exits_when_its_agent_is_killed(pooled_agent, minilm3):
    agent = pooled_agent
    agent.spawn(minilm3, 0)
    w = wait_for(lambda: idle(agent, "cow-0"), what="a pooled worker")[0]
    st = agent({"op": "status"})["status"]
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(10)
    wait_for(lambda: not alive(w["pid"], w["started"]), 10, "the orphaned worker to exit")
    agent.start()  # the restarted agent adopts the zygote and builds its pool again
    w2 = wait_for(lambda: idle(agent, "cow-0"), what="a new pooled worker")[0]
    assert w2["zygote_pid"] == st["zygotes"][0]["pid"] and w2["pid"] != w["pid"]
