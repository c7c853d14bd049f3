"""Stage handler: ``handle(event, context)`` as in the OpenFaaS python3-http template.

The stage's weights load when this module is imported (index.py imports it
once, before serving), so a forked replica inherits a ready model.  What a
stage does is documented in ``server.py``; its environment in ``config.py``.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from .config import StageConfig
from .server import StageServer

logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")
_server = StageServer(StageConfig.from_env())


def handle(event: Any, context: Any) -> dict[str, Any]:
    return _server.handle(event)


def warmup() -> None:
    """Run once in a zygote before it forks (index.py): children inherit built kernels."""
    _server.warmup()
