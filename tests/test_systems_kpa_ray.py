"""Knative KPA and Ray Serve baselines against hand-worked scenarios from their docs/source."""

from __future__ import annotations

import pytest

from benchmark.systems.base import Bounds, Tick
from benchmark.systems.knative_kpa import KnativeKPA, KPAStage, kpa_scale
from benchmark.systems.ray_serve import RayServe, apply_delay, apply_scaling_factor
from gateway_plugin.policies.observation import PipelineObservation, StageObservation


def tick(now: float, conc: float | None, ready: int) -> Tick:
    stage = StageObservation("f", replicas=ready)
    flight = {} if conc is None else {"f": conc}
    return Tick(now, (PipelineObservation("p", 0.5, now, (stage,)),), flight)


def drive(system, series, ready=None):
    """series: [(t, concurrency)]; ready fixed if given, else following the targets."""
    state = system.initial_state()
    pods = 1 if ready is None else ready
    out = {}
    for t, conc in series:
        res, state = system.decide(tick(t, conc, pods), state)
        out[t] = res["f"]
        if ready is None:
            pods = res["f"].replicas
    return out, state


# --------------------------------------------------------------------------- KPA


def test_kpa_target_is_concurrency_times_utilisation():
    assert KnativeKPA(Bounds()).target_for("f") == pytest.approx(0.7)  # cc 1 x 70 %
    assert KnativeKPA(Bounds(), container_concurrency=0).target_for("f") == pytest.approx(70.0)
    kpa = KnativeKPA(Bounds(), container_concurrency={"f": 10}, target=5)
    assert kpa.target_for("f") == pytest.approx(3.5)  # min(cc 10, target 5) x 0.7
    assert kpa.target_for("g") == pytest.approx(3.5)  # no cc: the annotation target


def test_kpa_stable_decision_is_ceil_of_average_over_target():
    # cc 10 -> target 7.  A steady 20 in flight over the whole window on 3 pods:
    # dspc = ceil(20 / 7) = 3, dppc = 3, 3/3 < 2: stable, 3.
    kpa = KnativeKPA(Bounds(1, 20), container_concurrency=10)
    out, state = drive(kpa, [(2.0 * i, 20.0) for i in range(31)], ready=3)
    assert out[60.0].replicas == 3 and "PANIC" not in out[60.0].reason
    assert state.stages["f"].panic_since_s is None
    # 50 in flight: ceil(50 / 7) = 8 = 2.67 x 3 ready -> that is panic (>= 2x the pods)
    desired, st, why = kpa_scale(50, 50, 3, 7.0, 0.0, KPAStage())
    assert desired == 8 and st.panic_since_s == 0.0 and "PANIC" in why


def test_kpa_panic_threshold_is_twice_the_ready_pods():
    # 2 ready, target 7: panic concurrency 28 -> dppc 4 = 2 x 2: panic; 21 -> 3: not
    assert kpa_scale(7, 28, 2, 7.0, 0.0, KPAStage())[1].panic_since_s == 0.0
    assert kpa_scale(7, 21, 2, 7.0, 0.0, KPAStage())[1].panic_since_s is None


def test_kpa_panics_on_a_burst_and_does_not_scale_down_until_a_stable_window_passes():
    # cc 10 -> target 7; 1 pod held ready; ticks every 2 s.
    # t=0..58: 7 in flight.  t=60,62,64: 40.  Then 0.
    # t=60: panic window (54,60] = 7,7,40 -> 18 -> dppc 3 >= 2 x 1: PANIC; stable (0,60]:
    #       (29 x 7 + 40) / 30 = 8.1 -> 2; desired max(2, 3) = 3
    # t=62: 7,40,40 -> 29 -> 5        t=64: 40,40,40 -> 6
    # t=66: 40,40,0 -> 26.7 -> 4 (still >= 2): panic extended, 4 < 6 -> keep 6
    # t=68: 40,0,0 -> 13.3 -> 2 (>= 2): extended to 68, keep 6
    # t=70..128: below threshold, but 68 + 60 is not < t: still panic, keep 6
    # t=130: 68 + 60 < 130: un-panic; stable (70,130] is all 0 -> 0 -> min 1
    kpa = KnativeKPA(Bounds(1, 20), container_concurrency=10)
    series = [(float(t), 7.0 if t < 60 else 40.0 if t <= 64 else 0.0) for t in range(0, 132, 2)]
    out, _ = drive(kpa, series, ready=1)
    assert out[58.0].replicas == 1 and "PANIC" not in out[58.0].reason
    assert [out[t].replicas for t in (60.0, 62.0, 64.0)] == [3, 5, 6]
    assert all(out[float(t)].replicas == 6 for t in range(66, 130, 2))
    assert "no scale-down in panic" in out[70.0].reason
    assert out[130.0].replicas == 1 and "PANIC" not in out[130.0].reason


def test_kpa_scale_down_rate_and_scale_to_zero_grace():
    # 10 ready pods, nothing in flight: desired 0, but at most halved per decision
    out, _ = drive(KnativeKPA(Bounds(1, 20)), [(0.0, 0.0)], ready=10)
    assert out[0.0].replicas == 5
    # to zero only after the 30 s grace, and only if the bounds allow zero
    series = [(2.0 * i, 0.0) for i in range(20)]
    out, _ = drive(KnativeKPA(Bounds(0, 20)), series, ready=1)
    assert out[28.0].replicas == 1 and out[30.0].replicas == 0
    out, _ = drive(KnativeKPA(Bounds(1, 20)), series, ready=1)
    assert {o.replicas for o in out.values()} == {1}
    out, _ = drive(KnativeKPA(Bounds(0, 20), enable_scale_to_zero=False), series, ready=1)
    assert {o.replicas for o in out.values()} == {1}


def test_kpa_holds_without_data_and_rejects_bad_settings():
    out, _ = drive(KnativeKPA(Bounds(1, 20)), [(0.0, None)], ready=4)
    assert out[0.0].replicas == 4 and "no concurrency data" in out[0.0].reason
    with pytest.raises(ValueError):
        KnativeKPA(Bounds(), target_utilization=70)
    with pytest.raises(ValueError):
        KnativeKPA(Bounds(), max_scale_down_rate=1.0)


# --------------------------------------------------------------------------- Ray Serve


def test_ray_scaling_factor_and_delay_steps():
    assert apply_scaling_factor(4.2, 2, 1.0, 1.0) == 5
    assert apply_scaling_factor(4.2, 2, 0.5, 1.0) == 4  # ceil(2 + 0.5 * 2.2) = ceil(3.1)
    assert apply_scaling_factor(1.5, 2, 1.0, 0.5) == 2  # ceil(1.5) = 2: not a scale-down
    assert apply_scaling_factor(0.5, 2, 1.0, 0.5) == 1  # ceil(1.625) = 2 would stick: 1
    # up after more than `up` consecutive decisions; a contrary decision resets
    assert apply_delay(4, 1, 2, 3, 10, 10) == (1, 3)
    assert apply_delay(4, 1, 3, 3, 10, 10) == (4, 0)
    assert apply_delay(1, 4, 3, 3, 10, 10) == (4, -1)
    assert apply_delay(4, 4, -5, 3, 10, 10) == (4, 0)


def test_ray_waits_the_upscale_delay():
    # 8 ongoing on 1 replica, target 2 -> desired 4.  1 s periods, 30 s delay: the count
    # must exceed int(30 / 1) = 30, i.e. the 31st consecutive decision at t=30.
    ray = RayServe(Bounds(1, 10))
    assert ray.period_s == 1.0 and ray.up_periods == 30
    out, state = drive(ray, [(float(t), 8.0) for t in range(32)], ready=1)
    assert out[29.0].replicas == 1 and "waiting 30/31" in out[29.0].reason
    assert out[30.0].replicas == 4 and state.stages["f"].decision_counter == 0


def test_ray_look_back_average_and_downscale_delay():
    # look back 30 s: 0 ongoing until t=20, then 8.  The average stays under the target 2
    # until t=28: (8 x 8) / 29 samples = 2.2 -> desired 1.1 -> ceil 2 (no upscale delay);
    # a 1 s look-back would have scaled to 4 at t=21.
    ray = RayServe(Bounds(1, 10), upscale_delay_s=0.0, downscale_delay_s=10.0)
    series = [(float(t), 0.0 if t < 21 else 8.0) for t in range(30)]
    out, _ = drive(ray, series)
    assert out[27.0].replicas == 1 and out[28.0].replicas == 2 and out[29.0].replicas == 2
    # 2 ongoing on 4 replicas with a 1 s look-back: desired 1; applied when the count is
    # below -int(10 / 1), i.e. on the 11th consecutive decision
    ray = RayServe(Bounds(1, 10), downscale_delay_s=10.0, look_back_period_s=1.0)
    out, _ = drive(ray, [(float(t), 2.0) for t in range(12)], ready=4)
    assert out[9.0].replicas == 4 and out[10.0].replicas == 1


def test_ray_cold_start_skips_the_delay():
    ray = RayServe(Bounds(0, 10))
    out, _ = drive(ray, [(0.0, 3.0)], ready=0)
    assert out[0.0].replicas == 1 and "cold start" in out[0.0].reason
    with pytest.raises(ValueError):
        RayServe(Bounds(), target_ongoing_requests=0)
