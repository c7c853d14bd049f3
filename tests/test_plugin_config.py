"""Plugin settings from the environment, and metrics -> observations (both pure)."""
from __future__ import annotations

import pytest

from gateway_plugin import observe
from gateway_plugin.actuate import Function, Pipeline
from gateway_plugin.config import ConfigError, PluginConfig
from gateway_plugin.metrics_in import FunctionMetrics, combine


def test_defaults_are_the_seed_knobs(tmp_path):
    c = PluginConfig.from_env({"QUART_STATE_DIR": str(tmp_path)})
    assert (c.kp, c.ki, c.kd, c.increment_ratio, c.min_cpu, c.max_cpu) == \
        (2.0, 0.3, 0.1, 0.25, 1.0, 16.0)
    assert c.gateway_url == "http://127.0.0.1:8080" and c.port == 8084 and c.auth is None


def test_password_the_openfaas_way(tmp_path):
    (tmp_path / "basic-auth-password").write_text("s3cret\n")
    c = PluginConfig.from_env({"secret_mount_path": str(tmp_path), "basic_auth_user": "ops"})
    assert c.auth == ("ops", "s3cret")


@pytest.mark.parametrize("env, needle", [
    ({"QUART_KP": "fast"}, "QUART_KP"), ({"QUART_CONTROL_PERIOD_S": "0"}, "QUART_CONTROL_PERIOD_S"),
    ({"QUART_MIN_REPLICAS": "5", "QUART_MAX_REPLICAS": "2"}, "QUART_MIN_REPLICAS"),
    ({"QUART_LATENCY_STATISTIC": "p50"}, "QUART_LATENCY_STATISTIC"),
    ({"QUART_INCREMENT_RATIO": "2"}, "QUART_INCREMENT_RATIO"),
])
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        PluginConfig.from_env(env)


def fn(name: str, replicas: int = 1) -> Function:
    return Function(name, replicas, replicas, None, 1, 5, {})


def test_own_latency_is_the_chain_difference_and_idle_is_zero():
    p = Pipeline("p", (fn("a"), fn("b"), fn("c")), None)
    fm = {"a": FunctionMetrics(arrival_rate=10, latency_mean_s=0.30, latency_p99_s=0.9,
                               compute_mean_s=0.02, arrival_cv=2.0),
          "b": FunctionMetrics(arrival_rate=10, latency_mean_s=0.25, latency_p99_s=0.5,
                               compute_mean_s=0.15, arrival_cv=1.5),
          "c": FunctionMetrics(arrival_rate=0.0, latency_mean_s=None, compute_mean_s=None)}
    mem: dict = {}
    o = observe.build(p, fm, 100.0, 0.5, mem)
    a, b, c = o.stages
    # a: 0.30 - 0.25 = 0.05 (mean is exact for a synchronous chain)
    assert a.latency_mean_s == pytest.approx(0.05) and a.departure_cv == 1.5
    # b: the next stage saw no arrivals -> its latency is 0, b's own is all of b's
    assert b.latency_mean_s == pytest.approx(0.25)
    assert c.latency_mean_s == 0.0 and c.service_time_s is None
    assert mem["b"].mean_s == 0.15
    # later window: b idle, but its service time is remembered (not "missing")
    o2 = observe.build(p, {"b": FunctionMetrics(arrival_rate=0.0)}, 110.0, 0.5, mem)
    assert o2.stages[1].service_time_s == 0.15 and o2.stages[1].latency_mean_s == 0.0
    assert o2.stages[0].arrival_rate is None  # no metrics at all: unknown, not zero


def test_combine_folds_namespaces_and_uses_moments():
    raw = {"arrivals": {"f": 10.0}, "lat_sum": {"f": 1.0}, "lat_count": {"f": 10.0},
           "ia_n": {"f": 300.0}, "ia_s": {"f": 30.0}, "ia_q": {"f": 6.0},
           "c_n": {"f": 10.0}, "c_s": {"f": 0.5}, "c_q": {"f": 0.025}}
    m = combine(raw)["f"]
    # gaps: mean 0.1, E[x^2] 0.02 -> var 0.01 -> CV 1.0 ; compute mean 0.05, CV 0
    assert m.arrival_cv == pytest.approx(1.0) and m.arrival_cv_source == "moments"
    assert m.latency_mean_s == pytest.approx(0.1) and m.compute_mean_s == pytest.approx(0.05)
    assert m.compute_cv == pytest.approx(0.0, abs=1e-6)
