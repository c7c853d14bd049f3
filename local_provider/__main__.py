"""``python -m local_provider``: the local OpenFaaS gateway + provider in the foreground.

Flags override the environment (see local_provider/config.py for every
variable and default).  Exits 0 after SIGTERM/SIGINT once all replicas stopped.
"""
from __future__ import annotations

import argparse
import logging
import sys

from local_provider.config import ConfigError, ServeConfig
from local_provider.server import ROLES, serve


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m local_provider", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=ROLES, default="all",
                   help="all: gateway + provider in one process (default)")
    p.add_argument("--bind", help="listen address (QUART_BIND, default 127.0.0.1)")
    p.add_argument("--gateway-port", type=int, help="QUART_GATEWAY_PORT (8080; 0 = free port)")
    p.add_argument("--provider-port", type=int, help="QUART_PROVIDER_PORT (8081; 0 = free port)")
    p.add_argument("--metrics-port", type=int, help="QUART_METRICS_PORT (8082; 0 = free port)")
    p.add_argument("--provider-url",
                   help="provider of a --role gateway process (functions_provider_url)")
    p.add_argument("--state-dir", help="QUART_STATE_DIR (.quart): logs, serve.json")
    p.add_argument("--auth-password-file",
                   help="file with the password of user admin (QUART_BASIC_AUTH_PASSWORD_FILE)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = ServeConfig.from_env(bind=a.bind, gateway_port=a.gateway_port,
                                   provider_port=a.provider_port, metrics_port=a.metrics_port,
                                   provider_url=a.provider_url, state_dir=a.state_dir,
                                   auth_password_file=a.auth_password_file)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return serve(cfg, role=a.role)
    except OSError as e:  # typically a port already in use; nothing was started yet
        print(f"error: cannot listen on {cfg.bind}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
