"""Configuration and credentials of the local provider (pure code, no processes)."""
from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest

from local_provider.auth import BasicAuth, from_config, resolve
from local_provider.config import AuthConfig, ConfigError, ServeConfig


def test_defaults_are_the_documented_ones() -> None:
    c = ServeConfig.from_env({})
    assert (c.bind, c.gateway_port, c.provider_port, c.metrics_port) == ("127.0.0.1", 8080, 8081,
                                                                         8082)
    assert c.provider_url == "http://127.0.0.1:8081/" and c.state_dir == Path(".quart")
    p = c.provider
    assert (p.queue_size, p.queue_timeout_s, p.upstream_timeout_s) == (256, 30.0, 60.0)
    assert (p.max_body_bytes, p.max_replicas, p.start_timeout_s) == (64 << 20, 32, 120.0)
    assert p.template_dir.name == "quart-python" and (p.template_dir / "index.py").is_file()
    assert c.server_threads == 256 + 128
    assert c.auth.enabled and c.auth.user == "admin"


def test_env_then_flags() -> None:
    env = {"QUART_GATEWAY_PORT": "0", "QUART_QUEUE_SIZE": "4", "QUART_QUEUE_TIMEOUT_S": "0.5",
           "QUART_STATE_DIR": "/tmp/a", "basic_auth": "false",
           "functions_provider_url": "http://p:1/"}
    c = ServeConfig.from_env(env, gateway_port=None, metrics_port=0, state_dir="/tmp/b")
    assert c.gateway_port == 0 and c.metrics_port == 0
    assert c.provider.queue_size == 4 and c.provider.queue_timeout_s == 0.5
    assert c.server_threads == 4 + 128
    assert c.state_dir == Path("/tmp/b") and c.provider.log_dir == Path("/tmp/b/logs")
    assert c.auth.enabled is False and c.provider_url == "http://p:1/"
    assert replace(c, state_dir=Path("/x")).provider.state_dir == Path("/x")


@pytest.mark.parametrize("env, name", [
    ({"QUART_GATEWAY_PORT": "eighty"}, "QUART_GATEWAY_PORT"),
    ({"QUART_QUEUE_TIMEOUT_S": "0"}, "QUART_QUEUE_TIMEOUT_S"),
    ({"QUART_MAX_REPLICAS": "0"}, "QUART_MAX_REPLICAS"),
    ({"basic_auth": "maybe"}, "basic_auth"),
])
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ServeConfig.from_env(env)


def test_credentials_sources(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    a = resolve(AuthConfig(password_file=pw), tmp_path)
    assert (a.user, a.password) == ("admin", "from-file")

    mount = tmp_path / "secrets"
    mount.mkdir()
    (mount / "basic-auth-user").write_text("ops")
    (mount / "basic-auth-password").write_text("mounted")
    a = resolve(AuthConfig(secret_mount_path=mount), tmp_path)
    assert (a.user, a.password) == ("ops", "mounted")

    state = tmp_path / "state"
    a = resolve(AuthConfig(), state)
    generated = (state / "basic-auth-password")
    assert a.password == generated.read_text().strip() and len(a.password) >= 24
    assert generated.stat().st_mode & 0o777 == 0o600
    assert resolve(AuthConfig(), state).password == a.password  # stable across restarts
    assert from_config(AuthConfig(enabled=False)) is None


def test_basic_auth_check() -> None:
    auth = BasicAuth("admin", "pw")
    assert auth.check(auth.header())
    for bad in (None, "", "Bearer x", "Basic ###",
                "Basic " + base64.b64encode(b"admin:pw2").decode(),
                "Basic " + base64.b64encode(b"admin").decode(),
                "Basic " + base64.b64encode(b"Admin:pw").decode()):
        assert not auth.check(bad), bad


def test_free_ports_are_never_handed_out_twice() -> None:
    """Callers pick several ports before binding any; bind(0) repeats a just-closed port
    about once in 750 picks of five here, and once gave the gateway's metrics and Prometheus
    the same port in CI (Prometheus never started, the plugin held its decisions)."""
    from local_provider.services import free_port

    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
