"""Stage handler: ``handle(event, context)`` as in the OpenFaaS python3-http template.

The stage's weights load when this module is imported (index.py imports it
once, before serving), so a forked replica inherits a ready model.  What a
stage does is documented in ``server.py``; its environment in ``config.py``.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from .config import StageConfig, require_model
from .server import StageServer

logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _make_server(cfg: StageConfig) -> Any:
    """The partition's manifest decides: an OPT decoder streams tokens (decoder_server.py),
    an emulated partition sleeps on an emulated accelerator (emulated.py)."""
    from .bert import read_manifest

    require_model(cfg)
    try:
        arch = read_manifest(cfg.model_dir).get("architecture")
    except (OSError, ValueError):
        arch = None  # StageServer reports a missing or unreadable partition
    if arch == "opt":
        from .decoder_server import DecoderServer

        return DecoderServer(cfg)
    if arch == "emulated":  # no weights: an emulated accelerator's forward (emulated.py)
        from .emulated import EmulatedServer

        return EmulatedServer(cfg)
    return StageServer(cfg)


_server = _make_server(StageConfig.from_env())


def handle(event: Any, context: Any) -> dict[str, Any]:
    return _server.handle(event)


def warmup() -> None:
    """Run once in a zygote before it forks (index.py): children inherit built kernels."""
    _server.warmup()


def openapi() -> dict[str, Any]:
    """This stage's OpenAPI document (index.py serves it at ``GET /_/openapi.json``)."""
    if hasattr(_server, "openapi"):  # a decoder stage describes itself (decoder_openapi.py)
        return _server.openapi()
    from .openapi import document

    return document(_server)
