"""The plugin's Redis store on a real redis-server, including the server going away."""
from __future__ import annotations

import time

import pytest

from gateway_plugin.store import DECISIONS, Store
from tests.redis_env import RedisServer


@pytest.fixture
def rs(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def test_state_and_checkpoint_round_trip(rs):
    st = Store(rs.url, prefix="t:")
    assert st.load_state() == (None, None, None)
    assert st.save_state({"a": 1}, b"\x00bytes", {"mae": 0.1})
    assert Store(rs.url, prefix="t:").load_state() == ({"a": 1}, b"\x00bytes", {"mae": 0.1})
    assert rs.client().type("t:state") == b"string"


def test_decisions_stream_is_bounded_and_newest_first(rs):
    st = Store(rs.url, prefix="t:", decisions_max=100)
    for i in range(500):
        st.record_decisions([{"i": i}])
    assert st.decisions(3) == [{"i": 499}, {"i": 498}, {"i": 497}]
    assert rs.client().xlen("t:" + DECISIONS) <= 200  # approximate trimming (~maxlen)


def test_history_is_bounded(rs):
    st = Store(rs.url, prefix="t:", history_max=10)
    for i in range(25):
        st.add_history({"i": i})
    assert [h["i"] for h in st.history()] == list(range(15, 25))


def test_leader_lock_excludes_a_second_instance_and_expires(rs):
    a, b = Store(rs.url, prefix="t:"), Store(rs.url, prefix="t:")
    assert a.lead(0.5) and not b.lead(0.5)
    assert a.lead(0.5)  # renewal by the holder
    assert b.leader() == a.instance
    time.sleep(0.7)  # a stopped renewing (e.g. kill -9): the lock expires
    assert b.lead(0.5) and not a.lead(0.5)
    b.resign()
    assert a.lead(0.5)


def test_redis_outage_keeps_everything_and_writes_it_back(rs):
    st = Store(rs.url, prefix="t:")
    assert st.lead(30)
    rs.stop()
    assert st.save_state({"cycle": 7}, None) is False  # no exception, kept in memory
    assert st.record_decisions([{"during": "outage"}]) is False
    assert st.load_state() == (None, None, None) and not st.up
    assert st.lead(30) is True  # a leader stays leader while nobody can take the lock
    assert st.decisions(5) == [{"during": "outage"}]
    rs.start()  # an empty server: what it had is gone, the store puts its copy back
    assert st.ping()
    assert Store(rs.url, prefix="t:").load_state()[0] == {"cycle": 7}
    assert st.decisions(5) == [{"during": "outage"}]


def test_up_with_plugin_starts_redis_and_down_stops_it(tmp_path):
    """redis-server rewrites its process title; `quart-faas down` must still find it."""
    from local_provider import deploy, plugin_services, services

    url = f"redis://127.0.0.1:{services.free_port()}/0"
    authed = plugin_services.ensure_redis(tmp_path, url, lambda _m: None)
    assert plugin_services.redis_answers(authed)
    assert deploy.down(tmp_path, lambda _m: None) == 1
    assert not plugin_services.redis_answers(authed)
    assert services.recorded(tmp_path) == []
