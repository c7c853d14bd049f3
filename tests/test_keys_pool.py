"""keys_manager's warm pool with real processes: a real agent, a real zygote mapping real
MiniLM weights, idle workers pre-forked from it and handed over as replicas."""
from __future__ import annotations

import os
import signal
import time

import pytest

from gateway_plugin.policies.pool_hint import pool_hint
from gateway_plugin.warm_pool import PoolHints
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


@pytest.mark.parametrize(("target", "current", "previous", "expected"), [
    (1, 1, None, (1, "")),  # first look, steady: one worker (the default)
    (5, 2, None, (3, "scale-up of 3: 3 pre-forked for the next one")),
    (5, 5, 3, (2, "no larger scale-up: 3 -> 2 pre-forked")),  # steps back one per period
    (5, 5, 1, (1, "")),  # never below one
    (0, 2, 2, (1, "no larger scale-up: 2 -> 1 pre-forked")),  # at zero: one, for the wake
    (40, 1, 2, (8, "scale-up of 39: 8 pre-forked for the next one")),  # capped
    (4, 3, 5, (4, "no larger scale-up: 5 -> 4 pre-forked")),  # a smaller step: decay wins
])
def test_pool_hint_forecasts_the_next_scale_up(target, current, previous, expected):
    assert pool_hint(target, current, previous) == expected


def test_the_plugins_hint_sizes_the_agents_pool(pooled_agent, minilm3):
    agent = pooled_agent
    agent.spawn(minilm3, 2)
    hints = PoolHints(str(agent.sock))
    assert hints.send("cow-2", 2) and hints.sent == {"cow-2": 2}
    assert agent({"op": "status"})["status"]["pool"]["sizes"] == {"cow-2": 2}
    wait_for(lambda: len(idle(agent, "cow-2")) == 2, what="two pooled workers")
    assert not PoolHints(str(agent.root / "nobody.sock")).send("cow-2", 1)  # logged, no raise


def test_a_pool_follows_its_zygote(pooled_agent, minilm3):
    """A zygote killed: its idle workers are stopped (no stale worker is ever handed over),
    and the pool is built again from the zygote warmed in its place."""
    agent = pooled_agent
    r = agent.spawn(minilm3, 1)
    old = wait_for(lambda: idle(agent, "cow-1"), what="a pooled worker")[0]
    os.kill(r["zygote_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(old["pid"], old["started"]), 30, "the stale worker stopped")
    new = wait_for(lambda: [w for w in idle(agent, "cow-1") if w["zygote_pid"] != r["zygote_pid"]],
                   90, "a worker of the new zygote")[0]
    z = next(z for z in agent({"op": "status"})["status"]["zygotes"] if z["function"] == "cow-1")
    assert new["zygote_pid"] == z["pid"]
    handed = agent.spawn(minilm3, 1, index=1)
    assert handed["pooled"] and handed["pid"] == new["pid"]
    assert embed(handed)["digest"] == embed(r)["digest"]


def test_pooled_only_hands_a_worker_over_or_answers_none_at_once(pooled_agent, minilm3):
    """The provider's scale call asks this on its own thread: a pooled worker, or nothing
    (no zygote started, no fork), so that it never waits for a slow start there."""
    agent = pooled_agent
    assert agent.spawn(minilm3, 1, pooled_only=True) is None  # no zygote yet: none started
    assert agent({"op": "status"})["status"]["zygotes"] == []
    first = agent.spawn(minilm3, 1)
    w = wait_for(lambda: idle(agent, "cow-1"), what="a pooled worker")[0]
    got = agent.spawn(minilm3, 1, index=1, pooled_only=True)
    assert got["pid"] == w["pid"] and got["pooled"] and got["tier"] == "T0"
    agent({"op": "pool", "function": "cow-1", "size": 0})
    assert agent.spawn(minilm3, 1, index=2, pooled_only=True) is None
    assert agent.spawn(minilm3, 1, index=2, pooled_only=True, mode="process") is None
    st = agent({"op": "status"})["status"]
    assert sorted(r["pid"] for r in st["replicas"]) == sorted([first["pid"], got["pid"]])
