"""Telling the node's keys_manager how many workers to keep pre-forked per function (the
``pool`` op on its socket, ``QUART_KEYS_SOCKET``), where the plugin runs beside it (the
embedded provider on one machine).  A hint is sent only when it changes, and a failure is
logged once and retried at the next change: the pool is an optimisation, never a reason
for a control cycle to fail."""
from __future__ import annotations

import logging
from pathlib import Path

from keys_manager.client import AgentError, call

log = logging.getLogger("gateway_plugin.warm_pool")


class PoolHints:
    def __init__(self, socket: str) -> None:
        self.socket = Path(socket) if socket else None
        self.sent: dict[str, int] = {}
        self._failing = False

    def send(self, function: str, size: int) -> bool:
        """True when keys_manager has (or already had) this size for ``function``."""
        if self.socket is None:
            return False
        if self.sent.get(function) == size:
            return True
        try:
            call(self.socket, {"op": "pool", "function": function, "size": size}, timeout_s=2)
        except AgentError as e:
            if not self._failing:
                log.warning("pool hints not delivered to keys_manager (%s): %s", self.socket, e)
            self._failing = True
            return False
        self._failing = False
        self.sent[function] = size
        return True
