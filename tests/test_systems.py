"""The registry, the --systems parser, and properties every compared system must have."""

from __future__ import annotations

import random

import pytest

from benchmark.systems.base import Autoscaler, Bounds, Target, Tick
from benchmark.systems.common import extrapolated_rate
from benchmark.systems.registry import (
    ALL,
    BASELINES,
    QUART_ABLATIONS,
    SYSTEMS,
    build_systems,
    parse_systems,
)
from gateway_plugin.policies.observation import PipelineObservation, StageObservation


def test_every_name_builds_a_system_with_that_name():
    for name, factory in SYSTEMS.items():
        system = factory(Bounds(1, 8))
        assert isinstance(system, Autoscaler)
        assert system.name == name
        assert system.period_s > 0 and system.scaleup in ("fork", "cold")


def test_parse_systems_expands_shorthands_in_order_without_repeats():
    assert parse_systems("quart, openfaas-ce") == ["quart", "openfaas-ce"]
    assert parse_systems("all") == list(ALL)
    assert parse_systems("baselines") == list(BASELINES)
    assert parse_systems("quart-ablations,quart") == list(QUART_ABLATIONS)
    assert parse_systems("static,baselines")[0] == "static"
    assert len(parse_systems("baselines,all")) == len(ALL)
    assert parse_systems(["knative-kpa", "ray-serve"]) == ["knative-kpa", "ray-serve"]
    assert "openfaas-pro-cpu" not in ALL and parse_systems("openfaas-pro-cpu")


def test_unknown_names_get_an_error_that_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        parse_systems("quart,kubernetes-hpa")
    msg = str(err.value)
    assert "kubernetes-hpa" in msg and "openfaas-ce" in msg and "quart-ablations" in msg
    with pytest.raises(ValueError, match="no systems"):
        parse_systems(" , ")


def test_build_systems_routes_options_per_system():
    systems = build_systems(
        "openfaas-pro-rps,ray-serve",
        Bounds(1, 5),
        {"openfaas-pro-rps": {"target": 7}, "ray-serve": {"upscale_delay_s": 0}},
    )
    assert [s.name for s in systems] == ["openfaas-pro-rps", "ray-serve"]
    assert systems[0].target == 7 and systems[1].up_periods == 0
    with pytest.raises(ValueError, match="not selected"):
        build_systems("ray-serve", Bounds(), {"static": {"mean_rps": 3}})
    with pytest.raises(TypeError, match="ray-serve"):
        SYSTEMS["ray-serve"](Bounds(), panic=True)
    with pytest.raises(TypeError, match="fixed by the system name"):
        SYSTEMS["openfaas-pro-rps"](Bounds(), mode="capacity")
    with pytest.raises(TypeError, match="Bounds"):
        SYSTEMS["static"]((1, 5))


def test_rate_follows_promql_extrapolation():
    # steady 10/s counter far from zero, samples every 5 s filling a 10 s range: exact
    s = tuple((t, 1000.0 + 10.0 * t) for t in (0.0, 5.0, 10.0))
    assert extrapolated_rate(s, 10.0, 10.0) == pytest.approx(10.0)
    # one sample: no result; a counter reset adds the post-reset value
    assert extrapolated_rate(s[:1], 0.0, 10.0) is None
    reset = ((0.0, 100.0), (5.0, 20.0))
    assert extrapolated_rate(reset, 5.0, 10.0) == pytest.approx(20.0 * 10.0 / 5.0 / 10.0)


def random_tick(rng: random.Random, now: float, names: list[list[str]]) -> Tick:
    def maybe(x):
        return None if rng.random() < 0.2 else x

    pipelines = []
    flight, counts = {}, {}
    for p, stage_names in enumerate(names):
        stages = []
        for name in stage_names:
            stages.append(
                StageObservation(
                    name,
                    replicas=rng.randint(0, 12),
                    arrival_rate=maybe(rng.uniform(0, 200)),
                    service_time_s=maybe(rng.uniform(0.005, 0.5)),
                    service_cv=maybe(rng.uniform(0, 3)),
                    latency_mean_s=maybe(rng.uniform(0, 2)),
                    latency_p99_s=maybe(rng.uniform(0, 5)),
                    queue_depth=maybe(rng.uniform(0, 50)),
                    arrival_cv=maybe(rng.uniform(0, 8)),
                    departure_cv=maybe(rng.uniform(0, 8)),
                    cpu_cores=maybe(rng.uniform(0.5, 4)),
                    cpu_s_per_request=maybe(rng.uniform(0.001, 0.5)),
                )
            )
            if rng.random() < 0.8:
                flight[name] = rng.uniform(0, 100)
            if rng.random() < 0.8:
                counts[name] = {"200": now * rng.uniform(0, 50), "500": rng.uniform(0, 3)}
        pipelines.append(PipelineObservation(f"p{p}", rng.uniform(0.05, 5), now, tuple(stages)))
    return Tick(now, tuple(pipelines), flight, counts)


@pytest.mark.parametrize("bounds", [Bounds(0, 3), Bounds(1, 20), Bounds(2, 7)])
def test_every_system_answers_every_stage_within_bounds(bounds):
    rng = random.Random(7 + bounds.max_replicas)
    names = [["a0", "a1", "a2"], ["b0", "b1"]]
    systems = [
        SYSTEMS[n](bounds, **({"train_every": 0} if n in QUART_ABLATIONS else {})) for n in SYSTEMS
    ]
    states = [s.initial_state() for s in systems]
    now = 0.0
    for _ in range(12):
        now += rng.choice([0.5, 1.0, 2.0, 5.0, 15.0])
        tick = random_tick(rng, now, names)
        for i, system in enumerate(systems):
            out, states[i] = system.decide(tick, states[i])
            assert set(out) == {n for group in names for n in group}, system.name
            for stage, target in out.items():
                assert isinstance(target, Target)
                assert isinstance(target.replicas, int), (system.name, stage)
                assert bounds.min_replicas <= target.replicas <= bounds.max_replicas, (
                    system.name,
                    stage,
                    target,
                )
                assert target.cpu is None or target.cpu > 0


def test_duplicate_stage_names_across_pipelines_are_rejected():
    stage = StageObservation("same", replicas=1, arrival_rate=1.0)
    tick = Tick(
        0.0,
        (
            PipelineObservation("p", 0.5, 0.0, (stage,)),
            PipelineObservation("q", 0.5, 0.0, (stage,)),
        ),
    )
    for name in ("openfaas-ce", "knative-kpa", "ray-serve", "openfaas-pro-rps", "static"):
        system = SYSTEMS[name](Bounds())
        with pytest.raises(ValueError, match="more than one pipeline"):
            system.decide(tick, system.initial_state())


def test_parse_systems_with_bounds_builds_the_systems():
    built = parse_systems("openfaas-ce,static", Bounds(1, 4), {"static": {"mean_rps": 2.0}})
    assert [s.name for s in built] == ["openfaas-ce", "static"]
    assert built[1].mean_rps == 2.0 and built[0].max_label == 4
    with pytest.raises(ValueError, match="need bounds"):
        parse_systems("static", options={"static": {"mean_rps": 2.0}})
