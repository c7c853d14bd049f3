"""OpenFaaS CE (alert rule -> AlertManager -> gateway step) and Pro (proportional) baselines.

Expected values are worked out by hand from the documented behaviour; each
test says how.
"""

from __future__ import annotations

import pytest

from benchmark.systems.base import Bounds, Tick
from benchmark.systems.openfaas_ce import OpenFaaSCE, calculate_replicas
from benchmark.systems.openfaas_pro import OpenFaaSPro, desired_replicas
from gateway_plugin.policies.observation import PipelineObservation, StageObservation


def tick(
    now: float,
    counters: dict[str, float],
    replicas: dict[str, int],
    in_flight: dict[str, float] | None = None,
    rate: float | None = None,
) -> Tick:
    stages = tuple(
        StageObservation(name, replicas=replicas[name], arrival_rate=rate, service_time_s=0.05)
        for name in counters
    )
    return Tick(
        now,
        (PipelineObservation("p", 0.5, now, stages),),
        in_flight or {},
        {name: {"200": c} for name, c in counters.items()},
    )


def run_ce(system, counter_fns, until: float, start: dict[str, int] | None = None):
    """Drive a CE system every scrape; replicas follow its targets. -> {t: {stage: n}}."""
    replicas = dict(start or {n: 1 for n in counter_fns})
    state = system.initial_state()
    seen = {}
    t = 0.0
    while t <= until:
        counters = {n: f(t) for n, f in counter_fns.items()}
        out, state = system.decide(tick(t, counters, replicas), state)
        replicas = {n: out[n].replicas for n in counter_fns}
        seen[t] = dict(replicas)
        t += system.period_s
    return seen, state


# --------------------------------------------------------------------------- CE: gateway


def test_ce_step_is_ceil_of_max_over_100_times_factor():
    # CE caps max at 5: step = ceil(5 / 100 * 20) = ceil(1.0) = 1
    assert calculate_replicas("firing", 1, 20, 1, 20) == 2
    assert calculate_replicas("firing", 4, 5, 1, 20) == 5
    assert calculate_replicas("firing", 5, 5, 1, 20) == 5  # never above max
    # max 3: step = ceil(3 / 100 * 20) = ceil(0.6) = 1; factor 100: step 5 -> straight to max
    assert calculate_replicas("firing", 1, 3, 1, 20) == 2
    assert calculate_replicas("firing", 1, 5, 1, 100) == 5
    assert calculate_replicas("resolved", 5, 5, 2, 20) == 2  # resolved -> min
    # factor 0 gives step 0: the handler's else-branch sets min, even for "firing"
    assert calculate_replicas("firing", 4, 5, 1, 0) == 1


# --------------------------------------------------------------------------- CE: the chain


def test_ce_fires_after_for_then_steps_at_each_renotification_then_back_to_min():
    # Evaluation every 5 s (scrape = eval = 5 s), 10 rps from t=0 to t=200.
    #   t=0  one sample: rate() has no result      t=5  rate 10 > 5: pending
    #   t=10 pending for 5 s >= for: firing -> new AlertManager group, group_wait 5 s
    #   t=15 first notification: 1 -> 2
    #   then flushes every 10 s; a repeat needs > 30 s since the last one: 55, 95, 135, 175
    #   t=205 rate over (195, 205] is 0: resolved, sent at the 205 flush -> min 1
    ce = OpenFaaSCE(Bounds(1, 20), evaluation_interval_s=5.0)
    seen, _ = run_ce(ce, {"f": lambda t: 10.0 * min(t, 200.0) + 1000.0}, 230)
    steps = {t: r["f"] for t, r in seen.items()}
    assert [steps[t] for t in (0, 5, 10)] == [1, 1, 1]
    assert steps[15] == 2 and steps[50] == 2
    assert steps[55] == 3 and steps[90] == 3
    assert steps[95] == 4 and steps[135] == 5 and steps[200] == 5
    assert steps[205] == 1 and steps[230] == 1


def test_ce_default_chart_evaluates_every_15s():
    # eval at 0, 15, 30: pending at 15 (samples 10 and 15), firing at 30, notified at 35
    ce = OpenFaaSCE(Bounds(1, 20))
    assert ce.period_s == 5.0
    seen, _ = run_ce(ce, {"f": lambda t: 10.0 * t + 500.0}, 40)
    assert seen[30]["f"] == 1 and seen[35]["f"] == 2


def test_ce_needs_more_than_5rps_for_the_whole_for_duration():
    ce = OpenFaaSCE(Bounds(1, 20), evaluation_interval_s=5.0)
    # exactly 5 rps is not "> 5"
    seen, state = run_ce(ce, {"f": lambda t: 5.0 * t}, 120)
    assert {r["f"] for r in seen.values()} == {1}
    assert not state.firing and not state.groups
    # 10 rps for 5 s only: pending at t=5, false at t=10 -> dropped, never fires
    burst = {"f": lambda t: 10.0 * min(t, 5.0) + 1000.0}
    _, state = run_ce(ce, burst, 5)
    assert set(state.pending_since) == {"f"} and not state.firing
    _, state = run_ce(ce, burst, 10)
    assert not state.pending_since
    seen, state = run_ce(ce, burst, 120)
    assert {r["f"] for r in seen.values()} == {1}
    assert not state.firing


def test_ce_one_alert_group_for_all_functions():
    # A: 10 rps from 0 -> fires at 10, notified at 15 (A=2).  B: 10 rps from t=17.
    # rate() stops extrapolating where a counter would hit zero: at t=20 B's samples are
    # 0 (t=15) and 30 (t=20) -> 30 * 5 / 5 / 10 = 3 rps, not > 5; at t=25 they are 30 and
    # 80, the start extrapolates 5 * 30/50 = 3 s -> 50 * 8 / 5 / 10 = 8 rps: pending; t=30
    # firing.  The shared group flushes at 25, 35, ...: at 35 the firing set grew, the
    # notification carries A and B, and the gateway steps both: A=3, B=2.
    fns = {"a": lambda t: 10.0 * t + 1000.0, "b": lambda t: 10.0 * max(0.0, t - 17.0)}
    seen, _ = run_ce(OpenFaaSCE(Bounds(1, 20), evaluation_interval_s=5.0), fns, 40)
    assert seen[30] == {"a": 2, "b": 1}
    assert seen[35] == {"a": 3, "b": 2}
    # grouped by function instead: B's own group notifies at 35, A waits for its repeat
    ce = OpenFaaSCE(Bounds(1, 20), evaluation_interval_s=5.0, group_by_function=True)
    seen, _ = run_ce(ce, fns, 40)
    assert seen[35] == {"a": 2, "b": 2}


def test_ce_honours_the_harness_bounds_within_its_cap():
    fn = {"f": lambda t: 20.0 * t + 100.0}
    # max 20 requested, CE caps at 5
    seen, _ = run_ce(OpenFaaSCE(Bounds(1, 20), evaluation_interval_s=5.0), fn, 400)
    assert max(r["f"] for r in seen.values()) == 5
    # max 3: never above 3; min 2: the floor and the resolved value
    seen, _ = run_ce(
        OpenFaaSCE(Bounds(2, 3), evaluation_interval_s=5.0),
        {"f": lambda t: 20.0 * min(t, 200.0)},
        260,
        start={"f": 2},
    )
    counts = [r["f"] for r in seen.values()]
    assert max(counts) == 3 and min(counts) == 2 and seen[260]["f"] == 2


def test_ce_uses_the_arrival_rate_when_the_harness_has_no_counter():
    ce = OpenFaaSCE(Bounds(1, 20), evaluation_interval_s=5.0)
    state = ce.initial_state()
    for t in range(0, 20, 5):
        stage = StageObservation("f", replicas=1, arrival_rate=12.0)
        tk = Tick(float(t), (PipelineObservation("p", 0.5, float(t), (stage,)),))
        out, state = ce.decide(tk, state)
    assert out["f"].replicas == 2  # pending 5, firing 10, notified 15


def test_ce_rejects_bad_settings():
    with pytest.raises(ValueError, match="scaling_factor"):
        OpenFaaSCE(Bounds(), scaling_factor=120)
    with pytest.raises(ValueError, match="evaluation_interval_s"):
        OpenFaaSCE(Bounds(), evaluation_interval_s=0)


# --------------------------------------------------------------------------- Pro


def test_pro_formula_matches_the_documented_examples():
    # docs: 15 in flight, target 5, proportion 1.0, 1 pod -> ceil(1 * 15/5) = 3
    assert desired_replicas(15, 1, 5, 1.0) == 3
    # docs: 25 in flight on 3 pods: ceil(3 * (8.33 / 5)) = 5
    assert desired_replicas(25, 3, 5, 1.0) == 5
    # docs: 90 in flight, target 100, proportion 0.7: ceil(90 / 70) = 2
    assert desired_replicas(90, 1, 100, 0.7) == 2
    # blog: 15 in flight, target 5, proportion 0.9: ceil(15 / 4.5) = 4
    assert desired_replicas(15, 1, 5, 0.9) == 4
    # 3 replicas, 90 rps, target 10: mean 30 per pod, ceil(3 * 30 / 9) = 10 (not 11 from
    # 3 * 3.3333333333333335 = 10.000000000000002)
    assert desired_replicas(90, 3, 10, 0.9) == 10
    assert desired_replicas(0, 3, 5, 1.0) == 0
    with pytest.raises(ValueError):
        desired_replicas(10, 0, 5, 1.0)


def pro_run(system, loads, replicas=3, mode_key="counter", dt=5.0):
    state = system.initial_state()
    out = {}
    for i, value in enumerate(loads):
        t = i * dt
        stage = StageObservation("f", replicas=replicas, service_time_s=0.1)
        if mode_key == "counter":
            tk = Tick(
                t,
                (PipelineObservation("p", 0.5, t, (stage,)),),
                {},
                {"f": {"200": value(t), "500": 0.0}},
            )
        else:
            tk = Tick(t, (PipelineObservation("p", 0.5, t, (stage,)),), {"f": value})
        res, state = system.decide(tk, state)
        out[t] = res["f"]
        replicas = res["f"].replicas
    return out, state


def test_pro_rps_uses_a_30s_prometheus_rate():
    # 90 rps on a counter that started long ago; target 10, proportion 0.9.
    # t=5: two samples 5 s apart in a 30 s range; PromQL extrapolates half an interval
    #   towards the start: 450 * (5 + 2.5) / 5 / 30 = 22.5 rps -> ceil(22.5 / 9) = 3
    # t=30: six samples over 25 s, 5 s from the range start (< 1.1 interval): the whole
    #   range -> 2250 * 30 / 25 / 30 = 90 rps -> ceil(90 / 9) = 10
    pro = OpenFaaSPro(Bounds(1, 20), mode="rps", target=10)
    assert pro.name == "openfaas-pro-rps"
    out, _ = pro_run(pro, [lambda t: 90.0 * (t + 1000.0)] * 7)
    assert out[0.0].replicas == 3  # no rate yet, no arrival rate: hold the 3 ready
    assert out[5.0].replicas == 3
    assert out[30.0].replicas == 10


def test_pro_capacity_takes_the_max_in_flight_over_45s():
    # max_over_time over 45 s: 15 (docs example) -> ceil(15 / (5 * 1.0)) = 3, held while
    # the 15 stays in the window; 45 s later the max is 2 -> 1
    pro = OpenFaaSPro(Bounds(1, 20), mode="capacity", target=5, target_proportion=1.0)
    loads = [15.0] + [2.0] * 10
    out, _ = pro_run(pro, loads, replicas=1, mode_key="inflight")
    assert out[0.0].replicas == 3
    assert out[40.0].replicas == 3
    assert out[45.0].replicas == 1


def test_pro_scale_down_window_keeps_the_highest_recommendation():
    # capacity target 1, proportion 1, a 5 s max_over_time (one sample) to isolate the
    # window: 10 in flight at t=0 -> 10 pods; then 2 -> the 60 s window still holds the 10
    # recommendation until t=60, then 2.  Without the window: 2 at t=5.
    kw = {"mode": "capacity", "target": 1, "target_proportion": 1.0, "capacity_range_s": 5.0}
    loads = [10.0] + [2.0] * 14
    out, _ = pro_run(OpenFaaSPro(Bounds(1, 20), down_window_s=60.0, **kw), loads, 1, "inflight")
    assert [out[t].replicas for t in (0.0, 5.0, 55.0, 60.0)] == [10, 10, 10, 2]
    assert "down window" in out[30.0].reason
    out, _ = pro_run(OpenFaaSPro(Bounds(1, 20), **kw), loads, 1, "inflight")
    assert out[5.0].replicas == 2
    # scale-up is not delayed by the window
    out, _ = pro_run(
        OpenFaaSPro(Bounds(1, 20), down_window_s=60.0, **kw), [2.0, 2.0, 10.0], 1, "inflight"
    )
    assert out[10.0].replicas == 10


def test_pro_targets_bounds_and_scale_to_zero():
    # no target given: rps target = 1 / service time = 10 rps per replica (x 0.9)
    pro = OpenFaaSPro(Bounds(1, 4), mode="rps")
    stage = StageObservation("f", replicas=1, arrival_rate=45.0, service_time_s=0.1)
    out, _ = pro.decide(
        Tick(0.0, (PipelineObservation("p", 0.5, 0.0, (stage,)),)), pro.initial_state()
    )
    assert out["f"].replicas == 4  # ceil(45 / 9) = 5, max 4
    # scale to zero after zero-duration with no traffic, only if the bounds allow 0
    for bounds, expect in ((Bounds(0, 4), 0), (Bounds(1, 4), 1)):
        pro = OpenFaaSPro(bounds, mode="capacity", scale_zero=True, zero_duration_s=60.0)
        out, _ = pro_run(pro, [0.0] * 14, replicas=1, mode_key="inflight")
        assert out[55.0].replicas == 1
        assert out[60.0].replicas == expect


def test_pro_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        OpenFaaSPro(Bounds(), mode="memory")
    with pytest.raises(ValueError, match="5m"):
        OpenFaaSPro(Bounds(), down_window_s=600)
    with pytest.raises(ValueError, match="target"):
        OpenFaaSPro(Bounds(), target=-1)
