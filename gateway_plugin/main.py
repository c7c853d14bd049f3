"""``quart-faas plugin``: the control loop beside the gateway.

Settings: gateway_plugin/config.py."""
from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
import time

from waitress.server import create_server

import webguard
from gateway_plugin.actuate import Gateway
from gateway_plugin.actuators import make_actuator
from gateway_plugin.app import create_app
from gateway_plugin.config import ConfigError, PluginConfig, redact
from gateway_plugin.controller import Controller
from gateway_plugin.health import Health
from gateway_plugin.metrics_in import PrometheusReader
from gateway_plugin.pacing import Triggers
from gateway_plugin.store import Store

log = logging.getLogger("gateway_plugin")


def run(cfg: PluginConfig, stop: threading.Event | None = None, ready=None) -> int:
    """Serve and run the loop until ``stop``; AuthConfigError when the doors would be open."""
    stop = stop or threading.Event()
    auth = webguard.require(cfg.basic_auth, cfg.user, cfg.password, "quart-faas plugin")
    store = Store(cfg.redis_url, cfg.redis_prefix)
    gw = Gateway(cfg.gateway_url, cfg.auth)
    ctl = Controller(cfg, gw, PrometheusReader(cfg.prometheus_url), store,
                     actuator=make_actuator(cfg, gw))
    # torch and friends leave ~200k objects to the cyclic collector: a full collection
    # would pause a cycle for ~140 ms every few periods; they are never garbage
    gc.collect()
    gc.freeze()
    triggers = Triggers(cfg.period_s, cfg.alert_min_interval_s)
    health = Health(cfg.period_s)
    srv = create_server(create_app(ctl, triggers, auth=auth, health=health), host=cfg.bind,
                        port=cfg.port, threads=4, ident=None)
    web = threading.Thread(target=srv.run, name="plugin-http", daemon=True)
    web.start()
    if threading.current_thread() is threading.main_thread():
        def on_signal(*_: object) -> None:
            stop.set()
            triggers.event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    port = int(srv.effective_port)  # waitress gives a str; the log line and ready() want int
    log.info("plugin %s on http://%s:%d (gateway %s, prometheus %s, redis %s, period %gs, "
             "actuator %s)", store.instance, cfg.bind, port, cfg.gateway_url,
             cfg.prometheus_url, redact(cfg.redis_url), cfg.period_s, cfg.actuator)
    if ready:
        ready(port)
    try:
        loop(ctl, triggers, health, stop)
    finally:
        srv.close()
        ctl.close()
        store.resign()
        log.info("plugin stopped")
    return 0


def loop(ctl: Controller, triggers: Triggers, health: Health, stop: threading.Event) -> None:
    """Cycles one at a time: the timer's every period, alerts' coalesced (pacing.py)."""
    while not stop.is_set():
        step = triggers.due(time.monotonic())
        if step is None:
            triggers.wait(stop)
            continue
        kind, only = step
        try:
            health.cycled(ctl.cycle(kind, only))
        except Exception as e:  # a bad cycle is logged; the loop goes on
            log.exception("control cycle failed")
            health.failed(f"{type(e).__name__}: {e}")
        triggers.done(kind, time.monotonic())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quart-faas plugin", description=__doc__)
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=a.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = PluginConfig.from_env()
        if cfg.actuator == "kubernetes":  # fail at start, not in the first cycle
            from kubernetes.config import ConfigException

            from gateway_plugin.kube_pods import KubernetesPods
            try:
                KubernetesPods.from_environment(cfg.function_namespace, cfg.pod_control_port)
            except ConfigException as e:
                raise ConfigError(f"QUART_ACTUATOR=kubernetes: no in-cluster service account "
                                  f"and no kubeconfig ({e})") from None
    except ConfigError as e:
        print(f"quart-faas plugin: {e}", file=sys.stderr)
        return 2
    try:
        return run(cfg)
    except webguard.AuthConfigError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
