"""How a replica target becomes workers, CPU and pods: pure, data in, decision out.

In pod mode a function's replicas, in the queueing sense the policies use, are *workers*:
processes the zygote of each pod forks, sharing the pod's CPU limit.  A target is met by
the fastest means that has room (issue 14, docs/cluster.md):

1. **workers** inside a pod (a fork, milliseconds): a ready pod whose control endpoint
   answers, below ``max_workers``, whose CPU limit already covers one more worker;
2. **cpu**: the same, raising the pod's limit in place (Pod ``resize``, sub-second) to
   cover the worker, up to ``max_cpu_millis``;
3. **pods** (seconds): the rest, ``new_pod_workers`` each, up to ``max_pods``.

Which pod gets a worker follows the KL dispersal of ``placement`` (Eq. 11-13)
with each pod an equal-capacity node that holds the stage warm (its zygote), so workers
spread over pods and losing a pod loses a proportional share.  Scaling down runs the ladder
backwards: pods not serving yet are cancelled first, then workers retire (KL removal) down
to ``min_workers`` per pod, then pods go.

A pod's CPU limit follows its workers: ``max(floor, workers x CPU per worker)``, at most
``max_cpu_millis``.  The floor is the function's own ``limits.cpu``, so the headroom a pod
was deployed with stays (it is what makes speed 1 possible); the CPU per worker is CPU
compensation's per-replica allocation, so this is where Algorithm 2 acts on a cluster.
Changes within ``cpu_tolerance`` are not made (no resize churn).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from placement import Node, StageRequest, place


@dataclass(frozen=True)
class PodView:
    name: str
    workers: int  # workers the pod runs (1 for a pod without a control endpoint)
    cpu_millis: int | None  # CPU limit in force; None: no limit (room, nothing to resize)
    ready: bool = True
    controllable: bool = True  # its control endpoint answered: workers can change
    resizable: bool = True  # the cluster takes an in-place CPU change for it now


@dataclass(frozen=True)
class PodLimits:
    max_workers: int = 4  # QUART_POD_MAX_WORKERS
    min_workers: int = 1
    floor_cpu_millis: int = 0  # the function's limits.cpu: a pod never goes below it
    max_cpu_millis: int = 8000  # QUART_POD_MAX_CPU
    min_pods: int = 1
    max_pods: int = 5  # com.openfaas.scale.max, the CE cap
    new_pod_workers: int = 1  # what a new pod starts with (its QUART_POD_WORKERS)
    cpu_tolerance: float = 0.01


@dataclass(frozen=True)
class PodChange:
    pod: str
    workers: int | None = None  # None: unchanged
    cpu_millis: int | None = None  # None: unchanged
    cpu_from: int | None = None


@dataclass(frozen=True)
class PodPlan:
    pods: int  # pod count to ask the gateway for
    changes: tuple[PodChange, ...]
    servers: int  # workers once the plan is done, starting pods counted at new_pod_workers
    speeds: tuple[str, ...]  # the means used, fastest first: workers, cpu, pods
    reason: str


def plan_pods(servers: int, cpu_per_worker_millis: int, pods: Sequence[PodView],
              requested_pods: int, lim: PodLimits, stage: str = "stage") -> PodPlan:
    """Realise ``servers`` workers of ``cpu_per_worker_millis`` each over ``pods`` (those
    listed; ``requested_pods`` is the gateway's replica count, which may include pods not
    created yet)."""
    ready = [p for p in pods if p.ready]
    starting = max(0, requested_pods - len(ready))
    w = {p.name: p.workers for p in ready}
    cpu = {p.name: p.cpu_millis for p in ready}
    npw = max(1, lim.new_pod_workers)
    have = sum(w.values()) + starting * npw
    want = max(servers, lim.min_pods * lim.min_workers)
    notes: list[str] = []
    if want > have:
        pods_n = _grow(want - have, ready, w, cpu, cpu_per_worker_millis, requested_pods, lim,
                       stage, notes)
    else:
        pods_n = _shrink(have - want, ready, w, starting, requested_pods, lim, stage, notes)
    pods_n = min(max(pods_n, lim.min_pods), lim.max_pods)
    changes = []
    for p in ready:
        new_cpu = _cpu_target(p, w[p.name], cpu_per_worker_millis, lim)
        dw = w[p.name] if w[p.name] != p.workers else None
        if dw is not None or new_cpu is not None:
            changes.append(PodChange(p.name, dw, new_cpu, p.cpu_millis))
    used = (("workers", any(c.workers is not None for c in changes)),
            ("cpu", any(c.cpu_millis is not None for c in changes)),
            ("pods", pods_n != requested_pods))
    speeds = tuple(name for name, on in used if on)
    if any(c.cpu_millis is not None and c.workers is None for c in changes):
        notes.append(f"CPU follows {cpu_per_worker_millis}m per worker")
    if pods_n >= len(ready):
        end = sum(w.values()) + (pods_n - len(ready)) * npw
    else:  # the orchestrator picks which pods go; each holds min_workers by now
        end = sum(w.values()) - (len(ready) - pods_n) * lim.min_workers
    return PodPlan(pods_n, tuple(changes), end, speeds,
                   "; ".join(notes) or f"{have} worker(s) on {len(ready)} ready pod(s): steady")


def _room(cpu: int | None, workers: int, cpw: int, tol: float) -> bool:
    return cpu is None or cpu >= workers * cpw * (1 - tol)


def _grow(deficit: int, ready: list[PodView], w: dict[str, int], cpu: dict[str, int | None],
          cpw: int, requested: int, lim: PodLimits, stage: str, notes: list[str]) -> int:
    """Speeds 1, 2, 3 in turn; ``w`` and ``cpu`` are updated in place."""
    added = 0
    while deficit > 0:  # 1: a fork where the CPU limit already has room
        cands = [p.name for p in ready if p.controllable and w[p.name] < lim.max_workers
                 and _room(cpu[p.name], w[p.name] + 1, cpw, lim.cpu_tolerance)]
        if not cands:
            break
        w[_kl_add(cands, w, stage)] += 1
        deficit, added = deficit - 1, added + 1
    if added:
        notes.append(f"+{added} worker(s) in pods with CPU room")
    resized = 0
    while deficit > 0:  # 2: a fork after raising the pod's CPU in place
        cands = [p.name for p in ready if p.controllable and p.resizable
                 and cpu[p.name] is not None and w[p.name] < lim.max_workers
                 and (w[p.name] + 1) * cpw <= lim.max_cpu_millis]
        if not cands:
            break
        pick = _kl_add(cands, w, stage)
        w[pick] += 1
        cpu[pick] = max(cpu[pick] or 0, w[pick] * cpw)
        deficit, resized = deficit - 1, resized + 1
    if resized:
        notes.append(f"+{resized} worker(s) after an in-place CPU resize")
    if deficit <= 0:
        return requested
    pods_n = min(requested + math.ceil(deficit / max(1, lim.new_pod_workers)), lim.max_pods)
    if pods_n > requested:
        notes.append(f"pods {requested}->{pods_n} for {deficit} more worker(s)")
    else:
        notes.append(f"{deficit} worker(s) short: pods at max {lim.max_pods}, workers at "
                     f"{lim.max_workers} per pod or CPU at {lim.max_cpu_millis}m")
    return pods_n


def _shrink(surplus: int, ready: list[PodView], w: dict[str, int], starting: int,
            requested: int, lim: PodLimits, stage: str, notes: list[str]) -> int:
    """Cancel pods not serving yet, retire workers, then drop pods."""
    pods_n = requested
    npw = max(1, lim.new_pod_workers)
    cancel = min(starting, surplus // npw)
    if cancel:
        pods_n, surplus = pods_n - cancel, surplus - cancel * npw
        notes.append(f"{cancel} pod(s) not serving yet cancelled")
    retired = 0
    while surplus > 0:
        cands = [p.name for p in ready if p.controllable and w[p.name] > lim.min_workers]
        if not cands:
            break
        w[_kl_remove(cands, w, stage)] -= 1
        surplus, retired = surplus - 1, retired + 1
    if retired:
        notes.append(f"-{retired} worker(s)")
    drop = surplus // max(1, lim.min_workers)
    if drop:
        new = max(lim.min_pods, pods_n - drop)
        if new < pods_n:
            notes.append(f"pods {pods_n}->{new}")
        pods_n = new
    return pods_n


def _cpu_target(p: PodView, workers: int, cpw: int, lim: PodLimits) -> int | None:
    """The pod's new CPU limit, or None when it stays (no limit, not resizable, or within
    the tolerance of what it has)."""
    if p.cpu_millis is None or not p.resizable:
        return None
    want = min(max(lim.floor_cpu_millis, workers * cpw, 1), lim.max_cpu_millis)
    if abs(want - p.cpu_millis) <= lim.cpu_tolerance * p.cpu_millis:
        return None
    return want


def _nodes(names: list[str], w: dict[str, int], stage: str) -> list[Node]:
    return [Node(name=n, memory_bytes=1, cached={stage: "T0"}, replicas={stage: w[n]})
            for n in names]


def _kl_add(cands: list[str], w: dict[str, int], stage: str) -> str:
    (pl,) = place(_nodes(cands, w, stage), [StageRequest(stage, add=1)])
    assert pl.node is not None  # every candidate holds the stage warm: always placeable
    return pl.node


def _kl_remove(cands: list[str], w: dict[str, int], stage: str) -> str:
    (pl,) = place(_nodes(cands, w, stage), [StageRequest(stage, remove=1)])
    assert pl.node is not None
    return pl.node
