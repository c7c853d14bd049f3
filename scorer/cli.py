"""``quart-faas scorer`` / ``python -m scorer``: the scorer's HTTP service.

Settings come from the environment (scorer/config.py);
``--bind`` and ``--port`` override SCHEDULER_BIND / SCHEDULER_PORT.  waitress
serves the Flask app; a background thread writes unsaved state every second
(it matters only after a store outage: requests write through).  SIGTERM or
SIGINT stops it after a last save.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable

from waitress.server import create_server

import webguard
from scorer.app import create_app
from scorer.config import ConfigError, ScorerConfig
from scorer.service import ScoringService
from scorer.store import open_backend

log = logging.getLogger("scorer")

FLUSH_EVERY_S = 1.0


def run(cfg: ScorerConfig, stop: threading.Event | None = None,
        ready: Callable[[int], None] | None = None) -> int:
    """Serve until ``stop`` is set (or a signal arrives); ``ready(port)`` once listening.
    AuthConfigError when no password is configured and basic_auth is not false."""
    stop = stop or threading.Event()
    auth = webguard.require(cfg.basic_auth, cfg.user, cfg.password, "quart-faas scorer")
    service = ScoringService(cfg, open_backend(cfg.db, cfg.redis_url, cfg.redis_prefix,
                                               cfg.db_path))
    srv = create_server(create_app(service, auth=auth), host=cfg.bind, port=cfg.port, threads=4,
                        ident=None)
    web = threading.Thread(target=srv.run, name="scorer-http", daemon=True)
    web.start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    port = int(srv.effective_port)
    log.info("scorer on http://%s:%d (db %s, %s)", cfg.bind, port, cfg.db,
             service.status()["message"])
    if ready:
        ready(port)
    try:
        while not stop.wait(FLUSH_EVERY_S):
            service.sync()
    finally:
        srv.close()
        service.sync()
        log.info("scorer stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quart-faas scorer", description=__doc__.split("\n")[0],
                                epilog="Environment: SCHEDULER_*, REDIS_URL and the basic-auth "
                                       "credentials "
                                       "(see scorer/config.py).")
    p.add_argument("--bind", help="address to listen on (SCHEDULER_BIND, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (SCHEDULER_PORT, default 8085; 0: any free)")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=a.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = ScorerConfig.from_env()
    except ConfigError as e:
        print(f"quart-faas scorer: {e}", file=sys.stderr)
        return 2
    if a.bind:
        cfg = dataclasses.replace(cfg, bind=a.bind)
    if a.port is not None:
        if not 0 <= a.port <= 65535:
            print(f"quart-faas scorer: --port {a.port} is not a port", file=sys.stderr)
            return 2
        cfg = dataclasses.replace(cfg, port=a.port)
    try:
        return run(cfg)
    except webguard.AuthConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the port is taken
        print(f"quart-faas scorer: cannot listen on {cfg.bind}:{cfg.port}: {e}", file=sys.stderr)
        return 1
