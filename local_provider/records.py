"""What the provider keeps per function (the desired state the REST handlers write), and the
pure rules the reconcile loop (registry.py) applies to it: what a replica was started from,
which replicas to stop first, how long to wait after failed starts."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from local_provider.images import ImageSource
from local_provider.replicas import ReplicaHandle
from local_provider.router import FunctionPool, Replica
from local_provider.types import FunctionDeployment

BACKOFF_MAX_S = 30.0


class FunctionExists(Exception):
    pass


class FunctionNotFound(KeyError):
    pass


def launch_key(dep: FunctionDeployment, source: ImageSource) -> tuple[object, ...]:
    """What a running replica was started from; limits, labels and annotations are not part
    of it (the folders are, however they were found: annotation, index or build output)."""
    return (dep.image, dep.env_process, tuple(sorted(dep.env_vars.items())), source.key(),
            tuple(dep.secrets))


@dataclass
class FunctionRecord:
    deployment: FunctionDeployment
    source: ImageSource
    desired: int
    pool: FunctionPool
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    generation: int = 1
    invocation_count: int = 0
    failures: int = 0
    not_before: float = 0.0

    @property
    def name(self) -> str:
        return self.deployment.service


def tell(handle: object, hook: str) -> None:
    """A handle's optional lifecycle hook (a pod publishes its state for the plugin's pod
    actuator: local_provider/pod_launcher.py); other handles have none."""
    fn = getattr(handle, hook, None)
    if callable(fn):
        fn()


# Calls in flight with none finished for this long: a replica stopped first on scale-down.
# The registry passes the outlier watch's limit for the function (outliers.stall_limit):
# a suspect, not merely a replica whose one call is slow.
STALLED_S = 2.0


def stop_order(replicas: list[Replica], now: float | None = None,
               stalled_after: float = STALLED_S) -> list[Replica]:
    """Which replicas to stop first: not yet ready, then stalled, then idle, then least busy;
    newest first."""
    t = time.monotonic() if now is None else now
    return sorted(replicas, key=lambda r: (r.ready, r.stalled_s(t) < stalled_after, r.inflight,
                                           -r.index))


# the launcher's placement policy, when it has one: (function, ready handles, k) -> k of them
PickVictims = Callable[[str, list[ReplicaHandle], int], Sequence[ReplicaHandle]]


def victims(function: str, current: list[Replica], k: int, pick: PickVictims | None,
            stalled_after: float = STALLED_S) -> list[Replica]:
    """The ``k`` replicas to stop: not-ready and stalled ones first; among the others, the
    launcher's placement policy decides when it has one (multi-node: keep the stage
    spread), else newest idle."""
    now = time.monotonic()
    order = stop_order(current, now, stalled_after)
    starting = [r for r in order
                if not r.ready or r.handle is None or r.stalled_s(now) >= stalled_after][:k]
    if pick is None or len(starting) >= k:
        return order[:k]
    ready = [r for r in order if r not in starting]
    chosen = pick(function, [r.handle for r in ready if r.handle is not None], k - len(starting))
    by_handle = {id(r.handle): r for r in ready}
    return starting + [by_handle[id(h)] for h in chosen if id(h) in by_handle]


def backoff_s(failures: int) -> float:
    """The wait before the next start after ``failures`` failed ones in a row: 0.5 s,
    doubling, at most ``BACKOFF_MAX_S``."""
    return min(BACKOFF_MAX_S, 0.5 * 2.0 ** (failures - 1))
