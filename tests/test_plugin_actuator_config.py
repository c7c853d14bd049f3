"""QUART_ACTUATOR and the pod settings, parsed once (gateway_plugin/config.py)."""
from __future__ import annotations

import pytest

from gateway_plugin import main
from gateway_plugin.actuate import Gateway
from gateway_plugin.actuators import GatewayActuator, make_actuator
from gateway_plugin.config import ConfigError, PluginConfig


def test_default_is_the_gateway_actuator(tmp_path):
    cfg = PluginConfig.from_env({"QUART_STATE_DIR": str(tmp_path)})
    assert cfg.actuator == "gateway"
    assert cfg.control_token_file == "/var/openfaas/secrets/quart-control-token"
    assert (cfg.function_namespace, cfg.pod_control_port, cfg.pod_max_workers) == \
        ("openfaas-fn", 8082, 4)
    assert isinstance(make_actuator(cfg, Gateway("http://127.0.0.1:9", None)), GatewayActuator)


def test_pod_settings_from_the_environment():
    cfg = PluginConfig.from_env({"QUART_ACTUATOR": "Kubernetes",
                                 "QUART_FUNCTION_NAMESPACE": "fn", "QUART_POD_MAX_WORKERS": "8",
                                 "QUART_POD_MAX_CPU": "6.5", "QUART_POD_CONTROL_PORT": "8081",
                                 "QUART_CONTROL_TOKEN_FILE": "/run/t"})
    assert (cfg.actuator, cfg.function_namespace, cfg.pod_max_workers, cfg.pod_max_cpu,
            cfg.pod_control_port, cfg.control_token_file) == ("kubernetes", "fn", 8, 6.5,
                                                              8081, "/run/t")


@pytest.mark.parametrize("env, needle", [
    ({"QUART_ACTUATOR": "helm"}, "QUART_ACTUATOR='helm'"),
    ({"QUART_POD_MAX_WORKERS": "0"}, "QUART_POD_MAX_WORKERS"),
    ({"QUART_POD_MAX_CPU": "lots"}, "QUART_POD_MAX_CPU"),
])
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        PluginConfig.from_env(env)


def test_kubernetes_actuator_outside_a_cluster_stops_at_start(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("QUART_ACTUATOR", "kubernetes")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main.main([]) == 2
    err = capsys.readouterr().err
    assert "QUART_ACTUATOR=kubernetes" in err and "kubeconfig" in err
