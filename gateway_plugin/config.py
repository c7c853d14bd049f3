"""The plugin's settings: one dataclass, every field from an environment variable.

| variable                      | default                  | meaning |
|-------------------------------|--------------------------|---------|
| OPENFAAS_URL                  | http://127.0.0.1:8080    | the gateway (REST API for scaling, as faas-cli uses it) |
| basic_auth_user / QUART_BASIC_AUTH_USER | admin          | gateway user; else ``$secret_mount_path/basic-auth-user`` |
| QUART_BASIC_AUTH_PASSWORD_FILE| (unset)                  | file with the gateway password; else ``$secret_mount_path/basic-auth-password`` (the OpenFaaS way), else ``$QUART_STATE_DIR/basic-auth-password`` (``.quart``) |
| basic_auth                    | true                     | the plugin's own ``/decisions`` and ``/system/alert`` take the same credentials; without a password the plugin refuses to start unless this is ``false`` |
| PROMETHEUS_URL                | http://127.0.0.1:9090    | where the gateway's metrics are scraped to |
| REDIS_URL                     | redis://127.0.0.1:6379/0 | all scaling state |
| QUART_REDIS_PREFIX            | quart:                   | key prefix (several deployments per Redis) |
| QUART_CONTROL_PERIOD_S        | 5                        | control period |
| QUART_ALERT_MIN_INTERVAL_S    | the control period       | at most one alert-triggered cycle per interval; alerts in between are coalesced (gateway_plugin/pacing.py) |
| QUART_SLO_S                   | 0.5                      | pipeline latency SLO (seed's target_latency) unless a function says ``com.openfaas.quart.slo`` |
| QUART_LATENCY_STATISTIC       | p99                      | what the SLO bounds: ``p99`` or ``mean`` |
| QUART_KP / QUART_KI / QUART_KD| 2.0 / 0.3 / 0.1          | PID gains (seed 001) |
| QUART_MIN_REPLICAS / QUART_MAX_REPLICAS | 1 / 20         | replica bounds; on an OpenFaaS CE gateway the max is capped at 5 |
| QUART_CE_MAX_REPLICAS         | 5                        | the CE cap (set higher on Pro/Enterprise) |
| QUART_MIN_CPU / QUART_MAX_CPU | 1.0 / 16.0               | CPU compensation bounds, CPUs per replica (seed 001) |
| QUART_INCREMENT_RATIO         | 0.25                     | share of the CPU gap allocated per step (seed 001) |
| QUART_MEMORY_THRESHOLD        | 0.65                     | keys_manager T1 budget, passed through for placement |
| QUART_TOLERANCE               | 0.1                      | relative band in which replicas are left alone |
| QUART_SCALE_DOWN_PERIODS      | 3                        | periods a lower count must persist before scaling down |
| QUART_SMOOTHING / QUART_CPU_COMPENSATION | 1 / 1         | turn a policy off |
| QUART_TRAIN_EVERY             | 12                       | retrain the GAT every N periods (0 = never) |
| QUART_TRAIN_BACKGROUND        | 1                        | train in a separate process, the new model swapped in at the start of a later cycle (gateway_plugin/trainer.py); 0: inline, the cycle waits (seconds) |
| QUART_PLUGIN_BIND / QUART_PLUGIN_PORT | 127.0.0.1 / 8084 | ``/metrics``, ``/healthz``, ``/livez``, ``/decisions``, ``POST /system/alert`` |
| QUART_ACTUATOR                | gateway                  | how decisions are applied (gateway_plugin/actuators.py): ``gateway`` (scale and CPU through the gateway's REST API; CPU only where its status has ``envVars``), ``kubernetes`` (functions in pod mode on faas-netes: workers through each pod's control endpoint, CPU by Pod ``resize``, pods through the gateway), ``pods`` (the same on local pods) |
| QUART_FUNCTION_NAMESPACE      | openfaas-fn              | where the function pods are (``kubernetes``) |
| QUART_CONTROL_TOKEN_FILE      | /var/openfaas/secrets/quart-control-token; ``pods``: ``$QUART_STATE_DIR/secrets/quart-control-token`` | the token the pods' control endpoints take (the secret the functions mount; for local pods, the one the provider's pod launcher gives them); absent: workers inside pods are left alone |
| QUART_POD_CONTROL_PORT        | 8082                     | the pods' control port (their QUART_CONTROL_PORT), served by each pod's zygote apart from its calls |
| QUART_POD_MAX_WORKERS         | 4                        | workers per pod at most (as the functions' own QUART_POD_MAX_WORKERS) |
| QUART_POD_MAX_CPU             | 8.0                      | CPUs a pod may be resized to in place, at most |
| QUART_POD_REGISTRY            | $QUART_STATE_DIR/pod-registry | ``pods``: where the local provider's pod launcher (``QUART_LAUNCHER=pod``, same state dir, default ``.quart``) describes its pods (local_pods.py) |
| QUART_KEYS_SOCKET             | (unset)                  | the node's keys_manager socket, where the plugin runs beside it (one machine): it is told how many workers to keep pre-forked per function (policies/pool_hint.py) |
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webguard import auth_enabled, credentials

ACTUATORS = ("gateway", "kubernetes", "pods")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PluginConfig:
    gateway_url: str = "http://127.0.0.1:8080"
    user: str = "admin"
    password: str = ""
    basic_auth: bool = True
    prometheus_url: str = "http://127.0.0.1:9090"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "quart:"
    period_s: float = 5.0
    alert_min_interval_s: float = 5.0
    slo_s: float = 0.5
    latency_statistic: str = "p99"
    kp: float = 2.0
    ki: float = 0.3
    kd: float = 0.1
    min_replicas: int = 1
    max_replicas: int = 20
    ce_max_replicas: int = 5
    min_cpu: float = 1.0
    max_cpu: float = 16.0
    increment_ratio: float = 0.25
    memory_threshold: str = "0.65"
    tolerance: float = 0.1
    scale_down_periods: int = 3
    smoothing: bool = True
    cpu_compensation: bool = True
    train_every: int = 12
    train_background: bool = True
    bind: str = "127.0.0.1"
    port: int = 8084
    actuator: str = "gateway"
    function_namespace: str = "openfaas-fn"
    control_token_file: str = "/var/openfaas/secrets/quart-control-token"
    pod_control_port: int = 8082
    pod_max_workers: int = 4
    pod_max_cpu: float = 8.0
    pod_registry: str = ".quart/pod-registry"
    keys_socket: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PluginConfig:
        e = os.environ if env is None else env
        read = _Env(e)
        get, num, flag = read.get, read.num, read.flag
        stat = get("QUART_LATENCY_STATISTIC", "p99")
        if stat not in ("p99", "mean"):
            raise ConfigError(f"QUART_LATENCY_STATISTIC={stat!r}: use 'p99' or 'mean'")
        actuator = get("QUART_ACTUATOR", "gateway").lower()
        if actuator not in ACTUATORS:
            raise ConfigError(f"QUART_ACTUATOR={actuator!r}: use one of {', '.join(ACTUATORS)}")
        user, password = credentials(e) or (get("QUART_BASIC_AUTH_USER",
                                                  get("basic_auth_user", "admin")), "")
        period_s = num("QUART_CONTROL_PERIOD_S", "5", lo=0.05, hi=3600)
        state = get("QUART_STATE_DIR", ".quart")  # the local provider's: its pods, its token
        token = (f"{state}/secrets/quart-control-token" if actuator == "pods"
                 else "/var/openfaas/secrets/quart-control-token")
        cfg = cls(
            gateway_url=get("OPENFAAS_URL", "http://127.0.0.1:8080").rstrip("/"),
            user=user, password=password, basic_auth=auth_enabled(e),
            prometheus_url=get("PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/"),
            redis_url=get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix=get("QUART_REDIS_PREFIX", "quart:"),
            period_s=period_s,
            alert_min_interval_s=num("QUART_ALERT_MIN_INTERVAL_S", f"{period_s!r}", lo=0.05,
                                     hi=3600),
            slo_s=num("QUART_SLO_S", "0.5", lo=1e-3, hi=3600),
            latency_statistic=stat,
            kp=num("QUART_KP", "2.0"), ki=num("QUART_KI", "0.3"), kd=num("QUART_KD", "0.1"),
            min_replicas=num("QUART_MIN_REPLICAS", "1", int, 0, 10000),
            max_replicas=num("QUART_MAX_REPLICAS", "20", int, 1, 10000),
            ce_max_replicas=num("QUART_CE_MAX_REPLICAS", "5", int, 1, 10000),
            min_cpu=num("QUART_MIN_CPU", "1.0", lo=0.001),
            max_cpu=num("QUART_MAX_CPU", "16.0", lo=0.001),
            increment_ratio=num("QUART_INCREMENT_RATIO", "0.25", lo=0.01, hi=1.0),
            memory_threshold=get("QUART_MEMORY_THRESHOLD", "0.65"),
            tolerance=num("QUART_TOLERANCE", "0.1", hi=0.99),
            scale_down_periods=num("QUART_SCALE_DOWN_PERIODS", "3", int, 1, 1000),
            smoothing=flag("QUART_SMOOTHING", "1"),
            cpu_compensation=flag("QUART_CPU_COMPENSATION", "1"),
            train_every=num("QUART_TRAIN_EVERY", "12", int, 0, 10**6),
            train_background=flag("QUART_TRAIN_BACKGROUND", "1"),
            bind=get("QUART_PLUGIN_BIND", "127.0.0.1"),
            port=num("QUART_PLUGIN_PORT", "8084", int, 0, 65535),
            actuator=actuator,
            function_namespace=get("QUART_FUNCTION_NAMESPACE", "openfaas-fn"),
            control_token_file=get("QUART_CONTROL_TOKEN_FILE", token),
            pod_control_port=num("QUART_POD_CONTROL_PORT", "8082", int, 1, 65535),
            pod_max_workers=num("QUART_POD_MAX_WORKERS", "4", int, 1, 1024),
            pod_max_cpu=num("QUART_POD_MAX_CPU", "8.0", lo=0.001),
            pod_registry=get("QUART_POD_REGISTRY", f"{state}/pod-registry"),
            keys_socket=get("QUART_KEYS_SOCKET", ""),
        )
        if cfg.min_replicas > cfg.max_replicas:
            raise ConfigError("QUART_MIN_REPLICAS must be <= QUART_MAX_REPLICAS")
        if cfg.min_cpu > cfg.max_cpu:
            raise ConfigError("QUART_MIN_CPU must be <= QUART_MAX_CPU")
        return cfg

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.user, self.password) if self.password else None


def redact(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host``: logs are not for passwords."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


class _Env:
    """Reads one environment's variables; every error names the variable and its value."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, default: str) -> str:
        return (self.env.get(name) or default).strip()

    def num(self, name: str, default: str, kind: Any = float, lo: float = 0.0,
            hi: float = float("inf")) -> Any:
        raw = self.get(name, default)
        try:
            v = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
        if not lo <= v <= hi:
            raise ConfigError(f"{name}={raw!r} must be in [{lo:g}, {hi:g}]")
        return v

    def flag(self, name: str, default: str) -> bool:
        return self.get(name, default).lower() not in ("0", "false", "no", "off")
