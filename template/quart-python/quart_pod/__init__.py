"""Pod mode of the quart-python template: a zygote inside the function's pod that forks
workers sharing one listening socket behind of-watchdog (on when QUART_POD_WORKERS is set).

Why it lives here, beside index.py, and not in keys_manager: a function image holds the
template, the handler and their requirements only (faas-cli copies this folder into the
build context), so what a pod runs must ship with the template. It needs lean_http.py
(beside index.py) and prometheus-client, in the template's requirements.txt.

    index.py (zygote)  loads the handler (the stage's weights) once, binds 127.0.0.1:5000
      |-- fork --> worker 0  lean_http on the shared socket  \\  the kernel hands each
      |-- fork --> worker 1  lean_http on the shared socket   > connection to a worker
      '-- fork --> worker N-1 ...                            /  with room (worker.py)

Scaling inside a pod takes milliseconds: ``PUT /_/quart/workers`` (control.py) on the
control port (QUART_CONTROL_PORT, default 8082), which the zygote serves itself (port.py),
or through the watchdog, where any worker relays it to the zygote (zygote.py). A worker
killed by a signal is replaced; when the zygote dies, its workers die with it
(PR_SET_PDEATHSIG), of-watchdog exits with its fprocess, and the platform restarts the
pod. Settings: config.py; metrics and the scrape annotations: metrics.py.
"""
from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from .config import PodConfig, PodConfigError, enabled, secrets_dir

__all__ = ["PodConfig", "PodConfigError", "enabled", "run", "secrets_dir"]


def run(router: Any, sock: socket.socket) -> None:
    """Become the pod's zygote for ``router`` (index.py's lean_http.Router, warmed up)
    listening on ``sock``; returns after SIGTERM once every worker has stopped."""
    from .worker import serve
    from .zygote import Zygote

    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = PodConfig.from_env()
        zygote = Zygote(cfg, lambda z, slot: serve(z, slot, router, sock))
    except (PodConfigError, OSError) as e:  # a taken control port included: said, not hidden
        raise SystemExit(f"pod mode: {e}") from None
    zygote.run()
