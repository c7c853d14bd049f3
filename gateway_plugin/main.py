"""``quart-faas plugin``: the control loop beside the gateway (settings: gateway_plugin/config.py)."""
from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
import time

from waitress.server import create_server

from gateway_plugin.actuate import Gateway
from gateway_plugin.actuators import make_actuator
from gateway_plugin.app import Triggers, create_app
from gateway_plugin.config import ConfigError, PluginConfig
from gateway_plugin.controller import Controller
from gateway_plugin.metrics_in import PrometheusReader
from gateway_plugin.store import Store

log = logging.getLogger("gateway_plugin")


def run(cfg: PluginConfig, stop: threading.Event | None = None, ready=None) -> int:
    stop = stop or threading.Event()
    store = Store(cfg.redis_url, cfg.redis_prefix)
    gw = Gateway(cfg.gateway_url, cfg.auth)
    ctl = Controller(cfg, gw, PrometheusReader(cfg.prometheus_url), store,
                     actuator=make_actuator(cfg, gw))
    # torch and friends leave ~200k objects to the cyclic collector: a full collection
    # would pause a cycle for ~140 ms every few periods; they are never garbage
    gc.collect()
    gc.freeze()
    triggers = Triggers()
    srv = create_server(create_app(ctl, triggers), host=cfg.bind, port=cfg.port, threads=4,
                        ident=None)
    web = threading.Thread(target=srv.run, name="plugin-http", daemon=True)
    web.start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: (stop.set(), triggers.event.set()))
    port = int(srv.effective_port)  # waitress gives a str; the log line and ready() want int
    log.info("plugin %s on http://%s:%d (gateway %s, prometheus %s, redis %s, period %gs, "
             "actuator %s)", store.instance, cfg.bind, port, cfg.gateway_url,
             cfg.prometheus_url, cfg.redis_url, cfg.period_s, cfg.actuator)
    if ready:
        ready(port)
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            timeout = max(0.0, next_at - time.monotonic())
            fired = triggers.event.wait(timeout)
            if stop.is_set():
                break
            only = triggers.take() if fired else None
            try:
                ctl.cycle("alert" if only else "timer", only or None)
            except Exception:  # a bad cycle is logged; the loop goes on
                log.exception("control cycle failed")
            if not only:
                next_at = time.monotonic() + cfg.period_s
    finally:
        srv.close()
        store.resign()
        log.info("plugin stopped")
    return 0


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
    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
