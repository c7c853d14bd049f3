"""benchmark.studies.sched's pure parts: decisions, eviction cost, gossip views, recovery maths."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import simpy

from benchmark.studies.sched.decide import (
    COLD_START,
    MIGRATE,
    SERVE,
    NodeView,
    cold_cost,
    decide_central,
    decide_gossip,
)
from benchmark.studies.sched.gossip import (
    ALIVE,
    DEAD,
    SUSPECT,
    Entry,
    GossipParams,
    View,
    rounds_to_converge,
)
from benchmark.studies.sched.models import CATALOGUE, ModelSpec, resolve_models
from benchmark.studies.sched.node import Job, WorkerNode
from benchmark.studies.sched.recovery import recovery_time, rolling_p99

BERT = CATALOGUE["bert-large-stage"]
MINI = CATALOGUE["minilm-stage"]
OPT = CATALOGUE["opt-125m"]
CAT = {m.name: m for m in (BERT, MINI, OPT)}


def nv(name, backlog=0.0, warm=(), mem=768.0, used=0.0, alive=True, cached=None):
    cached = tuple(warm) if cached is None else cached
    return NodeView(name, backlog, int(backlog > 0), tuple(sorted(warm)), mem, used, alive,
                    cached=cached)


# --- full information, no delay: a warm model is served -----------------------------------

def test_both_serve_a_warm_model_with_full_information():
    nodes = [nv("a", warm=[BERT.name], used=288), nv("b"), nv("c")]
    c = decide_central(nodes, BERT, CAT)
    g = decide_gossip(nodes[0], nodes[1:], BERT, CAT, migrated=False, forward_s=0.0)
    assert (c.action, c.node) == (SERVE, "a")
    assert (g.action, g.node) == (SERVE, "a")


def test_central_prefers_the_warm_node_with_the_shortest_queue():
    nodes = [nv("a", 1.0, [BERT.name]), nv("b", 0.3, [BERT.name]), nv("c")]
    assert decide_central(nodes, BERT, CAT).node == "b"


def test_central_cold_starts_when_every_warm_queue_is_too_long():
    # warm backlog 5 s > BERT's 2.851 s load; an idle empty node starts it in 2.851 s
    nodes = [nv("a", 5.0, [BERT.name], used=288), nv("b"), nv("c", 0.5)]
    d = decide_central(nodes, BERT, CAT)
    assert (d.action, d.node) == (COLD_START, "b")


def test_central_keeps_a_long_warm_queue_when_a_cold_start_would_be_slower():
    # backlog 3 s > load 2.851 s, but the only other nodes are busier: 2.851 + 2 > 3
    nodes = [nv("a", 3.0, [BERT.name]), nv("b", 2.0), nv("c", 2.5)]
    assert decide_central(nodes, BERT, CAT).action == SERVE


def test_central_skips_dead_nodes_and_fails_without_any():
    nodes = [nv("a", 0.0, [BERT.name], alive=False), nv("b")]
    assert decide_central(nodes, BERT, CAT) .node == "b"
    with pytest.raises(RuntimeError, match="no live node"):
        decide_central([nv("a", alive=False)], BERT, CAT)


def test_gossip_migrates_to_a_peer_believed_warm():
    here, peer = nv("a"), nv("b", 0.2, [BERT.name])
    d = decide_gossip(here, [peer], BERT, CAT, migrated=False, forward_s=0.0017)
    assert (d.action, d.node) == (MIGRATE, "b")


def test_gossip_never_migrates_a_migrated_request_and_ignores_suspects():
    here, peer = nv("a"), nv("b", 0.0, [BERT.name])
    assert decide_gossip(here, [peer], BERT, CAT, True, 0.0).action == COLD_START
    sus = nv("b", 0.0, [BERT.name], alive=False)
    d = decide_gossip(here, [sus], BERT, CAT, False, 0.0)
    assert (d.action, d.node) == (COLD_START, "a")


def test_gossip_serves_locally_when_warm_even_if_a_peer_looks_idler_within_the_limit():
    here = nv("a", 1.0, [BERT.name])  # 1 s <= 2.851 s: not too long
    d = decide_gossip(here, [nv("b", 0.0, [BERT.name])], BERT, CAT, False, 0.0)
    assert (d.action, d.node) == (SERVE, "a")


def test_gossip_cold_starts_locally_when_no_peer_is_faster():
    here = nv("a", 0.0)
    peer = nv("b", 10.0, [BERT.name])  # 10 s queue vs 2.851 s load here
    assert decide_gossip(here, [peer], BERT, CAT, False, 0.0).action == COLD_START


# --- eviction cost ---------------------------------------------------------------------

def test_cold_cost_adds_the_load_of_an_evicted_sole_copy():
    # 512 MiB node holding BERT (288, LRU, held nowhere else) and MiniLM (13.5, held
    # elsewhere); OPT needs 477.8: 301.5 + 477.8 > 512, evict BERT -> 13.5 + 477.8 <= 512.
    node = nv("a", 1.0, [BERT.name, MINI.name], mem=512, used=301.5,
              cached=(BERT.name, MINI.name))
    c = cold_cost(node, OPT, CAT, {BERT.name: 1, MINI.name: 2})
    assert c == pytest.approx(1.0 + OPT.load_s + BERT.load_s)
    # the same eviction is free when another node also holds BERT
    assert cold_cost(node, OPT, CAT, {BERT.name: 2, MINI.name: 2}) == pytest.approx(
        1.0 + OPT.load_s)


def test_cold_cost_evicts_from_the_lru_end_and_refuses_what_never_fits():
    node = nv("a", 0.5, [BERT.name, MINI.name], mem=512, used=301.5,
              cached=(MINI.name, BERT.name))
    # MiniLM (LRU, 13.5) goes first: 288 + 477.8 > 512 still, so BERT goes too
    counts = {BERT.name: 1, MINI.name: 1}
    assert cold_cost(node, OPT, CAT, counts) == pytest.approx(
        0.5 + OPT.load_s + MINI.load_s + BERT.load_s)
    assert cold_cost(nv("b", mem=100), BERT, CAT, {}) is None  # never fits


def test_a_node_is_warm_for_what_will_still_be_resident_after_its_queue():
    # 768 MiB holding two BERT-sized models (LRU first); a queued OPT load (477.8) will
    # evict the older one, so a request queued behind it would find only the newer one
    cat_b2 = {**CAT, "bert-b": BERT}
    env = simpy.Environment()
    node = WorkerNode(env, "n", 768.0, cat_b2, np.random.default_rng(0), lambda j, n: None)
    node.preload(BERT.name)
    node.preload("bert-b")
    assert node.warm() == tuple(sorted((BERT.name, "bert-b")))
    node.submit(Job(0, OPT.name, 0.0, 1.0, 32))
    assert node.warm() == tuple(sorted(("bert-b", OPT.name)))
    assert node.view().cached == ("bert-b", OPT.name)
    # backlog: the OPT load and its mean service (32 tokens)
    assert node.backlog_s() == pytest.approx(OPT.load_s + OPT.mean_serve_s)
    # a queued request for the older BERT protects it: the load evicts the other one
    node.expect(Job(1, BERT.name, 0.0, 1.0, 1))
    assert BERT.name in node.warm()
    assert node.used_mib() == pytest.approx(2 * BERT.size_mib)   # nothing loaded yet


# --- gossip views: staleness, versions, failure detection ----------------------------------

def test_a_view_is_stale_until_an_exchange_and_keeps_the_newer_version():
    a, b = View("a"), View("b")
    a.set_self(Entry("a", 1, 0.0, backlog_s=0.0), 0.0)
    b.set_self(Entry("b", 1, 0.0), 0.0)
    b.merge(a.snapshot(), 0.0)
    a.set_self(Entry("a", 2, 1.0, backlog_s=9.0), 1.0)       # a's queue grows
    assert b.entries["a"].backlog_s == 0.0                     # b does not know yet
    assert b.peers()[0].origin_s == 0.0                         # and knows how old it is
    b.merge(a.snapshot(), 1.2)
    assert (b.entries["a"].version, b.entries["a"].backlog_s) == (2, 9.0)
    b.merge([Entry("a", 1, 0.0)], 1.3)                          # an old rumour loses
    assert b.entries["a"].version == 2


def test_heartbeat_timeout_suspects_then_declares_dead_and_fresh_heartbeat_refutes():
    v = View("a")
    v.set_self(Entry("a", 1, 0.0), 0.0)
    v.merge([Entry("b", 1, 0.0), Entry("c", 1, 0.0)], 0.0)
    v.merge([Entry("c", 2, 1.0)], 1.0)
    assert v.detect(1.6, suspect_after_s=1.5, dead_after_s=4.0) == []
    assert (v.entries["b"].status, v.entries["c"].status) == (SUSPECT, ALIVE)
    v.merge([Entry("b", 2, 1.7)], 1.7)                          # b was only slow
    assert v.entries["b"].status == ALIVE
    v.detect(3.3, 1.5, 4.0)                                       # both silent > 1.5 s
    assert v.entries["c"].status == SUSPECT
    v.merge([Entry("b", 3, 7.0)], 7.0)                            # b refutes, c does not
    assert v.detect(7.4, 1.5, 4.0) == ["c"]                        # 4.1 s of suspicion
    assert (v.entries["b"].status, v.entries["c"].status) == (ALIVE, DEAD)
    assert "c" not in v.gossip_targets()


def test_suspicion_spreads_at_equal_version_but_nobody_suspects_itself():
    v = View("a")
    v.set_self(Entry("a", 5, 0.0), 0.0)
    v.merge([Entry("b", 3, 0.0)], 0.0)
    v.merge([Entry("b", 3, 0.0, status=SUSPECT), Entry("a", 5, 0.0, status=DEAD)], 0.1)
    assert v.entries["b"].status == SUSPECT
    assert v.entries["a"].status == ALIVE


def test_push_pull_converges_in_logarithmic_rounds():
    # Karp et al. 2000: log3 n + O(log log n) rounds for push-pull.  Measured here,
    # mean over 5 seeds; n grows 16x, rounds must grow like log n, far below 16x.
    means = {n: statistics.mean(rounds_to_converge(n, 1, s) for s in range(5))
             for n in (8, 32, 128)}
    for n, r in means.items():
        assert r <= math.log(n, 3) + math.log(math.log(n)) + 2, (n, r)
    assert means[8] < means[32] < means[128]
    assert means[128] / means[8] < 3.0
    assert rounds_to_converge(128, 3, 0) <= rounds_to_converge(128, 1, 0)


def test_gossip_params_reject_nonsense_and_scale_suspicion_like_memberlist():
    with pytest.raises(ValueError, match="fanout"):
        GossipParams(fanout=0)
    with pytest.raises(ValueError, match="period_s"):
        GossipParams(period_s=0)
    p = GossipParams()
    assert p.dead_after_s(3) == pytest.approx(4.0)        # 4 x max(1, log10 3) x 1 s
    assert p.dead_after_s(1000) == pytest.approx(12.0)    # 4 x 3 x 1 s
    with pytest.raises(ValueError):
        rounds_to_converge(1)


# --- recovery maths ----------------------------------------------------------------------

def test_rolling_p99_counts_failures_as_infinitely_slow():
    arr = np.arange(200, dtype=float)
    lat = np.full(200, 0.1)
    ok = np.ones(200, dtype=bool)
    ok[-1] = False
    # 1 failure in 200: rank 0.99*199 = 197.01 falls between two finite values
    assert rolling_p99(arr, lat, ok, 199.0, 1000.0) == pytest.approx(0.1)
    # 1 failure in the last 50: rank 48.51 reaches it
    assert math.isinf(rolling_p99(arr, lat, ok, 199.0, 50.0))
    assert math.isnan(rolling_p99(arr, lat, ok, -5.0, 1.0))


def test_recovery_waits_for_failed_requests_to_leave_the_window_and_for_the_models():
    # one request per second; those at 9 and 10 s failed (the crash at 10 s); window 10 s.
    arr = np.arange(0, 60, dtype=float)
    lat = np.full(60, 0.2)
    ok = np.ones(60, dtype=bool)
    ok[[9, 10]] = False
    samples = [float(t) for t in range(60)]
    everything = [frozenset({"m"})] * 60
    # (t-10, t] first excludes 10 at t = 20: 10 s
    assert recovery_time(10.0, arr, lat, ok, 1.0, 10.0, samples, everything, ["m"],
                         ["m"] * 60) == pytest.approx(10.0)
    # if "m" is only back at 30 s (and requested meanwhile), recovery is 20 s
    late = [frozenset() if t < 30 else frozenset({"m"}) for t in range(60)]
    assert recovery_time(10.0, arr, lat, ok, 1.0, 10.0, samples, late, ["m"],
                         ["m"] * 60) == pytest.approx(20.0)
    # a lost model nobody asks for again does not hold recovery up
    assert recovery_time(10.0, arr, lat, ok, 1.0, 10.0, samples, late, ["x"],
                         ["m"] * 60) == pytest.approx(10.0)
    # no evidence after the failure is no recovery: with silence from 10 s to 25 s the
    # first window that can count is the one ending at 25 s
    quiet = (arr < 10) | (arr >= 25)
    assert recovery_time(10.0, arr[quiet], lat[quiet], np.ones(quiet.sum(), dtype=bool), 1.0,
                         10.0, samples, everything, [], ["m"] * int(quiet.sum())
                         ) == pytest.approx(15.0)
    # never under the SLO: infinite
    assert math.isinf(recovery_time(10.0, arr, lat + 5, ok, 1.0, 10.0, samples, everything,
                                    [], ["m"] * 60))


# --- models --------------------------------------------------------------------------------

def test_model_specs_validate_and_resolve_per_target():
    with pytest.raises(ValueError, match="size_mib"):
        ModelSpec("x", size_mib=0, load_s=1, serve_s=1)
    with pytest.raises(ValueError, match="decoder"):
        ModelSpec("x", size_mib=1, load_s=1, kind="decoder")
    with pytest.raises(ValueError, match="kind"):
        ModelSpec("x", size_mib=1, load_s=1, serve_s=1, kind="rnn")
    got = resolve_models(("bert-large-stage-1", "fn-a", "fn-b", "opt-125m"), None)
    assert [g.name for g in got] == ["bert-large-stage-1", "fn-a", "fn-b", "opt-125m"]
    assert got[0].size_mib == 288.0 and got[3].kind == "decoder"
    assert {got[1].size_mib, got[2].size_mib} == {13.5, 288.0}   # encoders in turn
    with pytest.raises(ValueError, match="one per target"):
        resolve_models(("a", "b"), [MINI])
    with pytest.raises(ValueError, match="no spec"):
        resolve_models(("a",), {"b": MINI})
    assert OPT.service(1.0, 10) == pytest.approx((OPT.prefill_s,
                                                  OPT.prefill_s + 10 * OPT.per_token_s))
