"""A scale call hands keys_manager's pooled workers over on its own thread (issue 17): the
replica is available when the 202 comes back.  Without an idle worker the replica is forked
behind the call, as before.  Real provider, real agent, real zygote (the echo handler)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from test_provider_helpers import Server, start_server, wait_for

from keys_manager.client import call
from keys_manager.config import AgentConfig
from local_provider.bringup import Once

ENV = {"QUART_LAUNCHER": "fork", "QUART_KEYS_METRICS_PORT": "0", "QUART_KEYS_POOL": "1",
       "QUART_KEYS_REAP_S": "0.1", "QUART_STOP_GRACE_S": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("pool-scale"), env=ENV)
    yield s
    assert s.stop() == 0


def agent(server: Server, doc: dict[str, Any]) -> dict[str, Any]:
    return call(server.state_dir / "keys_manager.sock", doc, 30)


def idle(server: Server, fn: str) -> list[dict[str, Any]]:
    return list(agent(server, {"op": "status"})["status"]["pool"]["idle"].get(fn, []))


def scale(server: Server, name: str, n: int) -> None:
    r = server.api("POST", f"/system/scale-function/{name}",
                   json={"serviceName": name, "replicas": n})
    assert r.status_code == 202, r.text


def instances(server: Server, name: str) -> list[dict[str, Any]]:
    stats = server.api("GET", "/system/quart/stats", base=server.provider).json()
    return list(stats[name]["instances"])


def test_a_pooled_worker_is_a_replica_when_the_scale_call_returns(server: Server) -> None:
    server.deploy("pooled", 1)
    w = wait_for(lambda: idle(server, "pooled"), 60, what="a pooled worker")[0]
    scale(server, "pooled", 2)
    assert server.function("pooled")["availableReplicas"] == 2  # at once: no wait, no poll
    new = next(i for i in instances(server, "pooled") if i["pid"] == w["pid"])
    assert new["ready"] and new["pooled"] is True and new["tier"] == "T0"
    with ThreadPoolExecutor(4) as ex:  # slow calls side by side reach both replicas
        rs = list(ex.map(lambda _: server.call("pooled", params={"sleep_ms": 150}), range(8)))
    assert w["pid"] in {r.json()["pid"] for r in rs}  # routed to, as any replica
    state = AgentConfig.from_env({"QUART_STATE_DIR": str(server.state_dir)}).keys_dir / \
        "state.json"  # written after the agent's answer: it lists the replica all the same
    wait_for(lambda: w["pid"] in {r["pid"] for r in json.loads(state.read_text())["replicas"]},
             10, what="the hand-over in keys_manager's state.json")
    wait_for(lambda: "ready in" in server.log(), 10, what="the 'ready in' line, after the 202")
    scale(server, "pooled", 1)
    server.wait_available("pooled", 1)


def test_without_an_idle_worker_the_replica_is_forked_behind_the_call(server: Server) -> None:
    server.deploy("unpooled", 1)
    wait_for(lambda: idle(server, "unpooled"), 60, what="a pooled worker")
    agent(server, {"op": "pool", "function": "unpooled", "size": 0})
    wait_for(lambda: not idle(server, "unpooled"), 10, what="the pool emptied")
    scale(server, "unpooled", 2)
    server.wait_available("unpooled", 2)
    assert [i["pooled"] for i in instances(server, "unpooled")] == [False, False]
    assert not idle(server, "unpooled")  # pooled_only never forks a worker of its own


def test_what_runs_during_a_hand_over_runs_once_and_raises_after_it() -> None:
    """Registry.kick saves the desired state while keys_manager hands a worker over: a failed
    save must not abort reading the agent's answer (a replica), only be raised after."""
    calls: list[int] = []

    def save() -> None:
        calls.append(1)
        raise OSError("disk full")

    once = Once(save)
    once()  # as take_pooled's meanwhile: never raises
    once()
    assert calls == [1]
    with pytest.raises(OSError, match="disk full"):
        once.done()
    assert calls == [1]
