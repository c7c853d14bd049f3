"""The information-theoretic scorer (seed 004): formulas, exploration cap, learning,
interference, Sinkhorn, request validation and metrics, through Flask's test client."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scorer.app import create_app
from scorer.config import ConfigError, ScorerConfig
from scorer.model import (
    ExplorationWindow,
    Posterior,
    SchedulerModel,
    ema_variance_floor,
    information_gain,
    objective,
    update_posterior,
)
from scorer.service import ScoringService
from scorer.sinkhorn import round_plan, sinkhorn
from scorer.store import MemoryBackend


def client(**cfg):
    svc = ScoringService(ScorerConfig(db="memory", **cfg), MemoryBackend())
    return svc, create_app(svc, auth=None).test_client()


def score(c, job="stage-1", gpus=("a100", "l4"), colocated=None, **extra):
    body = {"job_type": job, "features": {"batch_size": 16}, "candidate_gpu_types": list(gpus),
            "colocated_job_types": colocated if colocated is not None else [], **extra}
    r = c.post("/v1/score", json=body)
    assert r.status_code == 200, r.json
    return r.json


def observe(c, job, gpu, runtime, colocated=()):
    r = c.post("/v1/observe", json={"job_type": job, "gpu_type": gpu,
                                    "measured_runtime_s": runtime,
                                    "colocated_job_types": list(colocated)})
    assert r.status_code == 200, r.json
    return r.json


def metrics(c) -> dict[str, float]:
    text = c.get("/metrics").data.decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


# ---------------------------------------------------------------------- formulas and config

def test_seed_defaults_and_env_names():
    cfg = ScorerConfig.from_env({})
    assert (cfg.lambda_uncertainty, cfg.beta_exploration, cfg.gamma_interference,
            cfg.exploration_cap, cfg.enable_interference) == (0.3, 0.7, 0.0, 0.25, False)
    cfg = ScorerConfig.from_env({"SCHEDULER_LAMBDA_UNCERTAINTY": "1", "SCHEDULER_BETA_EXPLORATION":
                                 "2", "SCHEDULER_GAMMA_INTERFERENCE": "3",
                                 "SCHEDULER_EXPLORATION_CAP": "0.5",
                                 "SCHEDULER_ENABLE_INTERFERENCE": "true"})
    assert (cfg.lambda_uncertainty, cfg.beta_exploration, cfg.gamma_interference,
            cfg.exploration_cap, cfg.enable_interference) == (1.0, 2.0, 3.0, 0.5, True)
    for bad in ({"SCHEDULER_EXPLORATION_CAP": "1.5"}, {"SCHEDULER_BETA_EXPLORATION": "x"},
                {"SCHEDULER_ENABLE_INTERFERENCE": "maybe"}, {"SCHEDULER_DB": "mongo"},
                {"SCHEDULER_EMA_ALPHA": "nan"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ScorerConfig.from_env(bad)
    shown = ScorerConfig(redis_url="redis://:hunter2@db:6379/0").public()
    assert shown["SCHEDULER_EXPLORATION_CAP"] == 0.25 and "hunter2" not in str(shown)


@pytest.mark.parametrize("mu,var,noise,penalty,expected", [
    # IG = 0.5*ln(1 + 4/4) = 0.34657; cost = 10 + 0.3*2 - 0.7*0.346574 + 0.5*2 = 11.357398
    (10.0, 4.0, 4.0, 2.0, 11.357398),
    # IG = 0.5*ln(1 + 9/1) = 1.15129; cost = 1 + 0.3*3 - 0.7*1.151293 + 0 = 1.094095
    (1.0, 9.0, 1.0, 0.0, 1.094095),
])
def test_objective_by_hand(mu, var, noise, penalty, expected):
    cfg = ScorerConfig(gamma_interference=0.5)
    assert objective(mu, var, information_gain(var, noise), penalty, cfg) == \
        pytest.approx(expected, abs=1e-6)


def test_ema_floor_and_first_updates_by_hand():
    cfg = ScorerConfig()  # alpha 0.1, noise cv 0.1
    assert ema_variance_floor(1.0, 0.1) == pytest.approx(0.1 / 1.9)
    # flat prior (job never seen): one sample -> mu = y, sigma^2 = tau^2 = (0.1*y)^2
    p1 = update_posterior(Posterior(0, 1.0, 1.0, 0.01), 73.4, cfg, informative=False)
    assert (p1.n, p1.mu, p1.var, p1.noise) == (1, 73.4, pytest.approx(53.8756),
                                               pytest.approx(53.8756))
    # second sample 75.4: k = 0.5 -> mu = 74.4, sigma^2 = 26.94; tau^2 = 0.5*(53.88 + 0.5*4)
    p2 = update_posterior(p1, 75.4, cfg)
    assert p2.mu == pytest.approx(74.4) and p2.var == pytest.approx(26.9378)
    assert p2.noise == pytest.approx(0.5 * (53.8756 + 0.5 * 4.0))


# ---------------------------------------------------------------------- learning

def test_uncertainty_shrinks_with_observations():
    _svc, c = client()
    rng = np.random.default_rng(4)
    before = {x["gpu_type"]: x for x in score(c)["candidates"]}["a100"]
    sigmas, igs = [before["sigma"]], [before["information_gain"]]
    for y in rng.normal(0.2, 0.01, size=30):
        o = observe(c, "stage-1", "a100", float(y))
        sigmas.append(o["sigma"])
        igs.append(o["information_gain"])
    after = {x["gpu_type"]: x for x in score(c)["candidates"]}["a100"]
    assert after["sigma"] < before["sigma"] / 20 and after["observations"] == 30
    assert after["mu"] == pytest.approx(0.2, abs=0.01)
    # sigma falls with every one of the first observations, then rests on the EMA floor
    assert all(b < a for a, b in itertools.pairwise(sigmas[:9]))
    assert igs[-1] < igs[1] < igs[0]
    assert after["sigma2"] >= ema_variance_floor(after["tau2"], 0.1) * (1 - 1e-9)
    # the unobserved candidate kept its prior, borrowed from this job's other GPU type
    l4 = {x["gpu_type"]: x for x in score(c)["candidates"]}["l4"]
    assert l4["observations"] == 0 and l4["mu"] == pytest.approx(after["mu"])


def test_mean_tracks_a_runtime_that_drifts():
    m = SchedulerModel(ScorerConfig())
    for _ in range(200):
        m.observe("s", "g", 1.0, [])
    for _ in range(60):  # the node got twice as slow
        m.observe("s", "g", 2.0, [])
    assert m.belief("s", "g").mu == pytest.approx(2.0, rel=0.05)


# ---------------------------------------------------------------------- exploration

def always_wants_to_explore() -> SchedulerModel:
    """One known GPU type (sigma 0.1 s) against never-tried ones (sigma 1 s, IG 2.31 nats):
    cost(known) = 1 + 0.03 - 0.7*0.347 = 0.787 > cost(unknown) = 1 + 0.3 - 0.7*2.308 = -0.315,
    while the exploitation cost of the known one is lower (1.03 < 1.3)."""
    m = SchedulerModel(ScorerConfig())
    m.observe("s", "known", 1.0, [])
    return m


@pytest.mark.parametrize("window", [100, 7, 0])
def test_exploration_cap_holds_over_many_decisions(window):
    m = always_wants_to_explore()
    m.window = ExplorationWindow(0.25, window)
    bits = []
    for _ in range(2000):
        d = m.decide("s", ["known", "new-1", "new-2"], lambda g: [])
        bits.append(d.exploratory)
        assert d.exploration_ratio <= 0.25 + 1e-12
        recent = bits[-window:] if window else bits
        assert sum(recent) / len(recent) <= 0.25 + 1e-12  # the window itself, recounted
        assert d.selected == ("new-1" if d.exploratory else "known")
        assert d.capped == (not d.exploratory)
    assert bits[:4] == [False, False, False, True]  # 1/4 is the first share <= 0.25
    # it explores as much as allowed: floor(cap * W) of every W decisions (W = 7: 1 in 7)
    share = math.floor(0.25 * window) / window if window else 0.25
    assert sum(bits) == pytest.approx(share * 2000, abs=2)


@pytest.mark.parametrize("cap,expected", [(0.0, 0), (1.0, 50)])
def test_cap_zero_never_explores_and_one_always_may(cap, expected):
    m = always_wants_to_explore()
    m.window = ExplorationWindow(cap, 100)
    assert sum(m.decide("s", ["known", "new"], lambda g: []).exploratory
               for _ in range(50)) == expected


def test_capped_decision_ranks_the_exploitation_choice_first():
    _svc, c = client()
    observe(c, "s", "known", 1.0)
    d = score(c, "s", ["new", "known"])  # decision 1: exploring would make the ratio 1/1
    assert d["capped"] and not d["exploratory"] and d["selected_gpu_type"] == "known"
    assert d["candidates"][0]["gpu_type"] == "known" and "cap" in d["reason"]
    terms = d["candidates"][1]["terms"]
    assert sum(terms.values()) == pytest.approx(d["candidates"][1]["cost"])
    for _ in range(2):
        score(c, "s", ["new", "known"])
    d = score(c, "s", ["new", "known"])  # decision 4: 1/4 <= 0.25
    assert d["exploratory"] and d["selected_gpu_type"] == "new" and d["exploration_ratio"] == 0.25


def test_dry_run_scores_without_counting():
    _svc, c = client()
    for _ in range(3):
        score(c, dry_run=True)
    assert metrics(c)["scheduler_decisions_total"] == 0
    assert score(c)["recorded"] is True and metrics(c)["scheduler_decisions_total"] == 1


def test_closed_loop_learns_the_fastest_node_type_within_the_cap():
    """Three node types (true service times 1.0, 0.6, 1.5 s, 3% noise); every decision's
    choice is run and observed.  The cap holds throughout and the 0.6 s type wins."""
    truth = {"a": 1.0, "b": 0.6, "c": 1.5}
    m = SchedulerModel(ScorerConfig())
    rng = np.random.default_rng(7)
    chosen = []
    for _ in range(300):
        d = m.decide("stage-2", list(truth), lambda g: [])
        assert d.exploration_ratio <= 0.25 + 1e-12
        chosen.append(d.selected)
        m.observe("stage-2", d.selected, truth[d.selected] * float(rng.normal(1, 0.03)), [])
    assert set(chosen) == set(truth)  # every type was tried
    assert chosen[-100:].count("b") >= 95
    assert m.belief("stage-2", "b").mu == pytest.approx(0.6, rel=0.03)


# ---------------------------------------------------------------------- interference

def test_interference_penalty_is_learned_and_raises_the_cost():
    _svc, c = client(enable_interference=True, gamma_interference=1.0)
    for _ in range(5):
        observe(c, "stage-1", "a100", 10.0)
    alone = score(c, "stage-1", ["a100"], dry_run=True)["candidates"][0]
    o = observe(c, "stage-1", "a100", 15.0, ["stage-3"])  # 50% slower beside stage-3
    assert o["learned"] == "interference" and o["slowdowns"] == {"stage-3": pytest.approx(0.5)}
    assert o["mu"] == pytest.approx(10.0)  # the solo belief stays clean
    beside = score(c, "stage-1", ["a100"], ["stage-3"], dry_run=True)["candidates"][0]
    assert beside["interference_penalty"] == pytest.approx(5.0)  # mu * s = 10 * 0.5
    assert beside["cost"] == pytest.approx(alone["cost"] + 5.0)
    # per-candidate neighbours: the same node type, empty, wins over the one beside stage-3
    observe(c, "stage-1", "l4", 11.0)
    d = score(c, "stage-1", ["a100", "l4"], {"a100": ["stage-3"], "l4": []}, dry_run=True)
    assert d["selected_gpu_type"] == "l4"
    # an unrelated neighbour costs nothing
    other = score(c, "stage-1", ["a100"], ["stage-9"], dry_run=True)["candidates"][0]
    assert other["interference_penalty"] == 0.0


def test_interference_splits_a_shared_slowdown_nlms():
    m = SchedulerModel(ScorerConfig(enable_interference=True))
    m.observe("x", "g", 2.0, [])
    m.observe("x", "g", 3.0, ["p", "q"])  # r = 3/2 - 1 = 0.5, split over 2: 0.25 each
    assert {k: v.s for k, v in m.slowdowns["x"].items()} == {"p": 0.25, "q": 0.25}
    for _ in range(100):  # p alone costs 40%: NLMS moves the split toward it
        m.observe("x", "g", 2.8, ["p"])
        m.observe("x", "g", 3.0, ["p", "q"])
    s = m.slowdowns["x"]
    assert s["p"].s == pytest.approx(0.4, abs=0.02) and s["q"].s == pytest.approx(0.1, abs=0.02)
    assert m.slowdown("x", ["p", "p"]) == pytest.approx(2 * s["p"].s)  # two instances


def test_interference_disabled_learns_nothing_and_costs_nothing():
    _svc, c = client(gamma_interference=1.0)  # SCHEDULER_ENABLE_INTERFERENCE=false
    observe(c, "s", "g", 10.0)
    o = observe(c, "s", "g", 20.0, ["noisy"])
    assert o["learned"] == "posterior" and o["slowdowns"] == {} and o["mu"] > 10.0
    assert score(c, "s", ["g"], ["noisy"])["candidates"][0]["interference_penalty"] == 0.0


# ---------------------------------------------------------------------- Sinkhorn

def test_sinkhorn_plan_rows_sum_to_one_and_rounding_respects_capacity():
    rng = np.random.default_rng(0)
    cost = rng.random((9, 3)) * 5
    caps = np.array([4, 0, 6])
    r = sinkhorn(cost, caps, epsilon=0.05)
    assert r.converged
    np.testing.assert_allclose(r.plan.sum(axis=1), 1.0, atol=1e-8)  # before rounding
    assert np.all(r.plan >= 0) and np.all(r.plan[:, 1] == 0)  # no mass where no capacity
    assert np.all(r.plan.sum(axis=0) <= caps + 1e-8)
    counts = np.bincount(r.assignment, minlength=3)
    assert counts.sum() == 9 and np.all(counts <= caps)


def test_sinkhorn_square_unit_capacities_is_doubly_stochastic_and_finds_the_matching():
    cost = np.array([[1.0, 9.0, 9.0], [9.0, 9.0, 1.0], [9.0, 1.0, 9.0]])
    r = sinkhorn(cost, np.ones(3), epsilon=0.02)
    np.testing.assert_allclose(r.plan.sum(axis=0), 1.0, atol=1e-8)
    np.testing.assert_allclose(r.plan.sum(axis=1), 1.0, atol=1e-8)
    assert r.assignment == [0, 2, 1]
    # unlimited capacity and small epsilon: every job takes its cheapest column
    cost = np.random.default_rng(1).random((20, 4))
    assert sinkhorn(cost, None, epsilon=0.005).assignment == list(cost.argmin(axis=1))
    with pytest.raises(ValueError, match="capacity"):
        sinkhorn(cost, np.array([5, 5, 5, 4]))
    assert round_plan(np.full((3, 2), 0.5), np.array([1, 2])).count(0) == 1


def test_assign_endpoint_spreads_a_batch_over_capacities():
    _svc, c = client()
    observe(c, "s", "fast", 0.5)
    observe(c, "s", "slow", 2.0)
    r = c.post("/v1/assign", json={"jobs": [{"job_type": "s"}] * 5,
                                   "candidate_gpu_types": ["fast", "slow"],
                                   "capacities": {"fast": 3, "slow": 10}})
    assert r.status_code == 200, r.json
    got = [a["gpu_type"] for a in r.json["assignment"]]
    assert got.count("fast") == 3 and got.count("slow") == 2  # the fast slots first
    assert all(abs(sum(row) - 1) < 1e-6 for row in r.json["plan"])
    assert metrics(c)["scheduler_decisions_total"] == 0  # a plan, not a decision
    r = c.post("/v1/assign", json={"jobs": [{"job_type": "s"}] * 5,
                                   "candidate_gpu_types": ["fast"], "capacities": {"fast": 4}})
    assert r.status_code == 422 and r.json["field"] == "capacities"


# ---------------------------------------------------------------------- validation

GOOD = {"job_type": "s", "candidate_gpu_types": ["g"]}


@pytest.mark.parametrize("path,body,status,field", [
    ("/v1/score", b"{not json", 400, "body"),
    ("/v1/score", b"", 400, "body"),
    ("/v1/score", [1, 2], 422, "body"),
    ("/v1/score", {"candidate_gpu_types": ["g"]}, 422, "job_type"),
    ("/v1/score", {**GOOD, "job_type": ""}, 422, "job_type"),
    ("/v1/score", {**GOOD, "candidate_gpu_types": []}, 422, "candidate_gpu_types"),
    ("/v1/score", {**GOOD, "candidate_gpu_types": ["g", "g"]}, 422, "candidate_gpu_types"),
    ("/v1/score", {**GOOD, "candidate_gpu_types": ["g", 3]}, 422, "candidate_gpu_types[1]"),
    ("/v1/score", {**GOOD, "colocated_job_types": "x"}, 422, "colocated_job_types"),
    ("/v1/score", {**GOOD, "colocated_job_types": {"h": []}}, 422, "colocated_job_types.h"),
    ("/v1/score", {**GOOD, "features": {"m": [1]}}, 422, "features.m"),
    ("/v1/score", {**GOOD, "dry_run": "yes"}, 422, "dry_run"),
    ("/v1/score", {**GOOD, "jobtype": "typo"}, 422, "jobtype"),
    ("/v1/observe", {"job_type": "s", "gpu_type": "g"}, 422, "measured_runtime_s"),
    ("/v1/observe", {"job_type": "s", "gpu_type": "g", "measured_runtime_s": -1}, 422,
     "measured_runtime_s"),
    ("/v1/observe", {"job_type": "s", "gpu_type": "g", "measured_runtime_s": 0}, 422,
     "measured_runtime_s"),
    ("/v1/observe", {"job_type": "s", "gpu_type": "g", "measured_runtime_s": True}, 422,
     "measured_runtime_s"),
    ("/v1/observe", {"job_type": "s", "gpu_type": "g", "measured_runtime_s": "7"}, 422,
     "measured_runtime_s"),
    ("/v1/observe", b'{"job_type":"s","gpu_type":"g","measured_runtime_s":NaN}', 422,
     "measured_runtime_s"),
    ("/v1/observe", {"job_type": "s", "measured_runtime_s": 1.0}, 422, "gpu_type"),
    ("/v1/assign", {"candidate_gpu_types": ["g"], "jobs": []}, 422, "jobs"),
    ("/v1/assign", {"candidate_gpu_types": ["g"], "jobs": [{"job_type": 1}]}, 422,
     "jobs[0].job_type"),
    ("/v1/assign", {"candidate_gpu_types": ["g"], "jobs": [{"job_type": "s"}],
                    "capacities": {"g": -1}}, 422, "capacities.g"),
    ("/v1/assign", {"candidate_gpu_types": ["g"], "jobs": [{"job_type": "s"}],
                    "epsilon": 0}, 422, "epsilon"),
])
def test_bad_bodies_are_answered_and_the_service_keeps_serving(path, body, status, field):
    _svc, c = client()
    r = c.post(path, data=body) if isinstance(body, bytes) else c.post(path, json=body)
    assert r.status_code == status, r.json
    assert r.json["field"] == field and field.split("[")[0].split(".")[0] in r.json["error"]
    assert score(c)["selected_gpu_type"] in ("a100", "l4")


def test_unknown_routes_methods_and_big_bodies_are_json_errors():
    _svc, c = client()
    assert c.get("/v1/nope").status_code == 404 and "endpoints" in c.get("/v1/nope").json["error"]
    assert c.get("/v1/score").status_code == 405 and "error" in c.get("/v1/score").json
    r = c.post("/v1/score", data=b" " * (2 << 20))
    assert r.status_code == 413 and r.json["field"] == "body"


# ---------------------------------------------------------------------- metrics and info

def test_metrics_expose_the_three_series_with_sensible_values():
    _svc, c = client()
    m = metrics(c)
    assert m["scheduler_decisions_total"] == 0 and m["scheduler_exploration_ratio"] == 0
    assert math.isnan(m["scheduler_avg_uncertainty"])  # nothing learned yet
    observe(c, "s", "known", 1.0)
    u1 = metrics(c)["scheduler_avg_uncertainty"]
    assert u1 == pytest.approx(0.1)  # one sample: sigma = NOISE_CV * y
    for _ in range(40):
        score(c, "s", ["known", "new"])
    m = metrics(c)
    assert m["scheduler_decisions_total"] == 40
    assert m["scheduler_exploration_ratio"] == pytest.approx(10 / 40)  # capped at 0.25
    assert m["scheduler_exploratory_decisions_total"] == 10
    assert m["scheduler_capped_decisions_total"] == 30
    for _ in range(10):
        observe(c, "s", "known", 1.0)
    assert 0 < metrics(c)["scheduler_avg_uncertainty"] < u1
    assert m["scheduler_exploration_cap"] == 0.25 and m["scheduler_store_up"] == 1


def test_index_shows_configuration_and_healthz_is_ok():
    _svc, c = client(exploration_cap=0.1)
    info = c.get("/").json
    assert info["config"]["SCHEDULER_EXPLORATION_CAP"] == 0.1
    assert info["config"]["SCHEDULER_LAMBDA_UNCERTAINTY"] == 0.3
    assert "POST /v1/score" in info["endpoints"]
    h = c.get("/healthz").json
    assert h["ok"] and h["db"] == "memory" and "lost on restart" in h["message"]
