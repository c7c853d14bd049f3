"""Each deployed function's body limit, as the gateway's parser asks for it (body_guard.py).

Why cached per deployment: the parser asks on waitress' I/O thread for every request, and a
limit comes from the function's environment and its partition manifest on disk; it changes
only when the function is deployed or updated.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from contracts.body_limits import function_body_limit
from local_provider.records import FunctionNotFound
from local_provider.registry import Registry
from local_provider.replicas import env_for


class FunctionLimits:
    """``get(name)``: the largest body function ``name`` can accept, None when unknown."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[object, int | None]] = {}

    def get(self, name: str) -> int | None:
        try:
            rec = self.registry.get(name)
        except FunctionNotFound:
            return None
        dep = rec.deployment  # replaced, never changed in place, on update
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] is dep:
            return hit[1]
        limit = function_body_limit(env_for(dep.env_vars, self.registry.replica_env),
                                    rec.source.workdir)
        with self._lock:
            self._cache[name] = (dep, limit)
        return limit

    def all(self) -> dict[str, int]:
        return {n: lim for n in self.registry.names() if (lim := self.get(n)) is not None}


def path_limits(lookup: Callable[[str], int | None], default_limit: int
                ) -> Callable[[str], tuple[int, str] | None]:
    """The parser's question for a path: ``/function/NAME[.NS][/...]`` has its function's
    limit (never above the global one); any other path the global one."""
    def limit_for(path: str) -> tuple[int, str] | None:
        if not path.startswith("/function/"):
            return None
        name = path[len("/function/"):].split("/", 1)[0].split(".", 1)[0]
        own = lookup(name) if name else None
        if own is None or own >= default_limit:
            return None
        return own, f"function {name}"
    return limit_for
