"""A replica that hangs is ejected and replaced; scale-down takes the stalled one first.

The rules (local_provider/outliers.py, records.py) are pinned on plain data; then the real
provider with replicas forked by keys_manager, as in the demo: one of two replicas is
SIGSTOPped under load.  The code at the time of issue 18 kept routing to it until its
slots filled, never replaced it, and scaled down the *healthy* one.
"""
from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests
from test_provider_helpers import Server, pid_alive, start_server, wait_for

from local_provider.config import ProviderConfig
from local_provider.outliers import MIN_SAMPLES, OutlierWatch, stall_limit, suspects
from local_provider.records import stop_order, victims
from local_provider.router import FunctionPool, Replica

CFG = ProviderConfig()


# -- the rules, on plain data ------------------------------------------------------------

def test_the_stall_limit_is_cold_until_the_function_has_history_then_k_p99_of_gaps() -> None:
    assert stall_limit([0.05] * (MIN_SAMPLES - 1), CFG) == CFG.eject_cold_s
    assert stall_limit([0.05] * MIN_SAMPLES, CFG) == CFG.eject_min_s  # 5 x 50 ms < 2 s
    slow = [1.0] * 99 + [0.7]
    assert stall_limit(slow, CFG) == pytest.approx(5.0)


def test_suspects_are_the_longest_stalled_over_the_limit_within_the_cap() -> None:
    gaps = [0.05] * 100  # limit 2 s
    stalls = {1: 0.0, 2: 2.5, 3: 9.0, 4: 1.9}
    got = suspects(stalls, gaps, 0, CFG)
    assert [s.uid for s in got] == [3, 2] and got[0].limit_s == 2.0  # 50 % of 4
    assert [s.uid for s in suspects(stalls, gaps, 1, CFG)] == [3]
    assert suspects(stalls, gaps, 2, CFG) == []
    # one replica alone, hung: the cap still lets one go (it is replaced, not dropped)
    assert [s.uid for s in suspects({7: 3.0}, gaps, 0, CFG)] == [7]


def _replicas(now: float) -> tuple[Replica, Replica]:
    healthy = Replica(0, 1, handle=object(), ready=True, inflight=1, alive_at=now - 0.01)
    hung = Replica(1, 1, handle=object(), ready=True, inflight=8, alive_at=now - 5.0)
    return healthy, hung


def test_scale_down_stops_a_stalled_replica_before_a_healthy_one() -> None:
    """Finding 2: the hung replica, full with 8 calls, looked *busier*, and the idle-first
    rule stopped the healthy one."""
    now = time.monotonic()
    healthy, hung = _replicas(now)
    assert stop_order([healthy, hung], now)[0] is hung
    assert victims("f", [healthy, hung], 1, None) == [hung]
    # a placement policy asked for the rest never overrules it
    assert victims("f", [healthy, hung], 1, lambda _f, hs, k: hs[:k]) == [hung]


def test_a_probe_that_answers_restarts_the_clock_and_ejects_nothing() -> None:
    """A replica busy with one long call is stalled too; the probe tells it from a hung one."""
    pool = FunctionPool("f", 8, 16)
    now = time.monotonic()
    healthy, hung = _replicas(now)
    for r in (healthy, hung):
        pool.add(r)

    class Reg:
        marked: list[str] = []

        def names(self) -> list[str]:
            return ["f"]

        def get(self, _name: str) -> object:
            return type("Rec", (), {"pool": pool})()

        def mark_dead(self, _name: str, r: Replica, hung: str = "") -> bool:
            self.marked.append(hung)
            return True

        def kick(self) -> None:
            pass

    reg = Reg()
    watch = OutlierWatch(reg, replace(CFG, eject_cold_s=2.0), probe=lambda h, t: True)
    assert watch.tick() == 0 and reg.marked == []
    assert hung.stalled_s(time.monotonic()) < 1.0
    hung.alive_at -= 5.0
    watch.probe = lambda h, t: False
    assert watch.tick() == 1 and "no call finished" in reg.marked[0] and pool.ejections == 1


# -- the real provider, forked replicas ----------------------------------------------------

@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("outliers"),
                     env={"QUART_QUEUE_TIMEOUT_S": "20", "QUART_STOP_GRACE_S": "1",
                          "QUART_LAUNCHER": "fork", "QUART_KEYS_METRICS_PORT": "0"})
    yield s
    assert s.stop() == 0


def _load(server: Server, name: str, stop: threading.Event, out: list) -> None:
    s = requests.Session()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            r = s.post(f"{server.gateway}/function/{name}", params={"sleep_ms": 20}, timeout=60)
            out.append((t0, time.monotonic() - t0, r.status_code,
                        r.json().get("pid") if r.status_code == 200 else r.text))
        except requests.RequestException as e:
            out.append((t0, time.monotonic() - t0, 0, repr(e)))


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def test_sigstop_of_one_replica_under_load_it_is_ejected_and_replaced(forked: Server) -> None:
    name = "hangs"
    forked.deploy(name, 2)
    stop, calls = threading.Event(), []
    with ThreadPoolExecutor(8) as ex:
        for _ in range(8):
            ex.submit(_load, forked, name, stop, calls)
        time.sleep(4.0)  # the function's history: its p99 and the stall limit
        pids = Counter(c[3] for c in calls if c[2] == 200)
        assert len(pids) == 2, pids
        victim = min(pids)
        t_stop = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_for(lambda: not pid_alive(victim), 10, what="the hung replica ejected")
            t_gone = time.monotonic()
            time.sleep(4.0)
        finally:
            stop.set()
            if pid_alive(victim):
                os.kill(victim, signal.SIGCONT)
    before = [c for c in calls if c[0] + c[1] < t_stop]
    after = [c for c in calls if c[0] >= t_stop]
    normal = _p99([c[1] for c in before])
    # Read by the replica before the stop: may fail (a 502, as for any replica that dies).
    # Every other call succeeds: those it never read are re-sent to the live replica.
    at_stop = [c for c in calls if c[0] < t_stop <= c[0] + c[1]]
    codes = Counter(c[2] for c in at_stop)
    failed = [c for c in calls if c[2] != 200]
    assert all(c[0] < t_stop and c[2] == 502 for c in failed), failed[:5]
    assert len(failed) <= 8, codes
    # Only the calls the router had handed the hung replica (its 8 slots at most) wait for
    # the ejection; the rest keep their latency.
    slow = [c for c in after if c[1] > 3 * normal]
    rest = [c[1] for c in after if c[1] <= 3 * normal]
    print(f"normal p99 {normal * 1e3:.0f} ms; ejected {t_gone - t_stop:.2f} s after SIGSTOP; "
          f"{len(slow)} of {len(after)} calls after it waited for the ejection; "
          f"p99 of the others {_p99(rest) * 1e3:.0f} ms; in flight at the stop: {codes}, the "
          f"slowest {max(c[1] for c in at_stop):.2f} s")
    assert t_gone - t_stop < 2.0 + 1.0 + 3.0  # the 2 s stall limit, 1 s probe, slack
    assert len(slow) <= 8, [round(c[1], 2) for c in slow]
    assert _p99(rest) < 3 * normal
    assert victim not in {c[3] for c in calls if c[0] > t_gone + 0.5}
    assert "is hung (no call finished" in forked.log()
    forked.wait_available(name, 2)
    metrics = requests.get(forked.metrics + "/metrics", timeout=5).text
    assert f'quart_replica_ejections_total{{function_name="{name}.openfaas-fn"}} 1' in metrics
