"""The default (``gateway``) actuator never writes back a spec it did not read in full.

faas-netes returns no ``envVars`` in ``GET /system/functions`` and its ``PUT`` replaces the
env and resets replicas (tests/fake_faas_netes.py answers the same way, and records every
request).  The plugin's old read-modify-write CPU step issued that PUT and wiped
QUART_STAGE, QUART_MODEL_DIR and QUART_NEXT_FUNCTION: now it is refused and logged once."""
from __future__ import annotations

import logging

import pytest

from gateway_plugin.actuate import Gateway
from gateway_plugin.config import PluginConfig
from gateway_plugin.controller import Controller
from gateway_plugin.metrics_in import PrometheusReader
from gateway_plugin.policies.chain import StageDecision
from gateway_plugin.policies.observation import StageObservation
from gateway_plugin.store import Store
from tests.fake_faas_netes import FakeFaasNetes
from tests.redis_env import RedisServer

ENV = {"QUART_STAGE": "1", "QUART_MODEL_DIR": "/home/app/function/models/minilm-3",
       "QUART_NEXT_FUNCTION": "minilm-stage-2", "QUART_STAGES": "3"}
STAGE = {"image": "ttl.sh/quart-faas/minilm-stage:0.1.0", "envProcess": "python index.py",
         "envVars": ENV, "labels": {"com.openfaas.scale.min": "1",
                                    "com.openfaas.scale.max": "5"},
         "annotations": {"com.openfaas.quart.pipeline": "minilm",
                         "com.openfaas.quart.stage": "1", "com.openfaas.quart.stages": "3"},
         "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}, "replicas": 3}


def test_set_cpu_refuses_a_status_without_env_vars():
    from gateway_plugin.actuate import IncompleteSpec

    with FakeFaasNetes({"minilm-stage-1": STAGE}) as fake:
        gw = Gateway(fake.url, ("admin", "pw"))
        (fn,) = gw.functions()
        assert "envVars" not in fn.body and fn.cpu == 1.0
        with pytest.raises(IncompleteSpec, match="envVars"):
            gw.set_cpu(fn, 2.0)
        assert fake.calls("PUT") == []
        assert fake.functions["minilm-stage-1"]["envVars"] == ENV
        assert fake.functions["minilm-stage-1"]["replicas"] == 3


def test_actuator_scales_but_leaves_cpu_and_logs_once(caplog):
    """Three cycles asking for 2 CPUs and 4 replicas: the scale goes through, no PUT ever
    reaches faas-netes, the env and scale stay, and the refusal is logged once."""
    from gateway_plugin.actuators import GatewayActuator

    caplog.set_level(logging.WARNING, logger="gateway_plugin.actuators")
    with FakeFaasNetes({"minilm-stage-1": STAGE}) as fake:
        gw = Gateway(fake.url, ("admin", "pw"))
        act = GatewayActuator(gw)
        for _ in range(3):
            (fn,) = gw.functions()
            out = act.apply(fn, 4, 2.0)
            assert out.cpu == 1.0 and out.error == "" and "envVars" in out.note
        assert fake.calls("PUT") == []
        assert [c.json() for c in fake.calls("POST", "/system/scale-function/")] == [
            {"serviceName": "minilm-stage-1", "replicas": 4}]
        assert fake.functions["minilm-stage-1"]["envVars"] == ENV
        assert fake.functions["minilm-stage-1"]["replicas"] == 4
    refusals = [r for r in caplog.records if "CPU actuation refused" in r.getMessage()]
    assert len(refusals) == 1 and "minilm-stage-1" in refusals[0].getMessage()


def test_a_status_read_in_full_is_written_back_whole_before_the_scale():
    """The embedded provider's status carries envVars and constraints: the PUT goes out
    with all of them (the recorder does see PUTs), then the scale restores the replicas a
    faas-netes-like PUT resets."""
    from gateway_plugin.actuators import GatewayActuator

    with FakeFaasNetes({"minilm-stage-1": {**STAGE, "constraints": ["zone=a"]}},
                       echo_env=True) as fake:
        gw = Gateway(fake.url, ("admin", "pw"))
        (fn,) = gw.functions()
        out = GatewayActuator(gw).apply(fn, 4, 2.0)
        assert out.cpu == 2.0 and out.speeds == ("cpu", "pods")
        (put,) = fake.calls("PUT")
        body = put.json()
        assert body["envVars"] == ENV and body["constraints"] == ["zone=a"]
        assert body["limits"] == {"cpu": "2000m", "memory": "1Gi"}
        assert [r.method for r in fake.requests] == ["GET", "PUT", "POST"]
        assert fake.functions["minilm-stage-1"]["replicas"] == 4
        assert fake.functions["minilm-stage-1"]["envVars"] == ENV


@pytest.fixture
def redis_url(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s.url
    s.stop()


def test_the_controller_on_faas_netes_issues_no_put(redis_url):
    """Through the control loop's own step (the code path that issued the PUT)."""
    with FakeFaasNetes({"minilm-stage-1": STAGE}) as fake:
        cfg = PluginConfig(gateway_url=fake.url, redis_url=redis_url)
        ctl = Controller(cfg, Gateway(fake.url, None), PrometheusReader("http://127.0.0.1:9"),
                         Store(redis_url))
        ctl._detect()
        assert ctl.ce and ctl.cpu_actuation  # a stock gateway: CPU is wanted, where safe
        (fn,) = ctl.gw.functions()
        d = StageDecision(pipeline="minilm", name=fn.name, replicas=4, cpu=2.0,
                          predictor="qna", critical=True, reason="test", budget_s=0.1,
                          mmc_replicas=4, corrected_replicas=4, predicted_cv=1.0)
        rec = ctl._apply_stage(fn, d, StageObservation(fn.name, 3), "timer", 0.0)
        assert fake.calls("PUT") == []
        assert fake.functions["minilm-stage-1"]["envVars"] == ENV
        assert rec["replicas"] == 4 and rec["action"] == "up" and rec["error"] == ""
        assert "envVars" in rec["actuation"]
