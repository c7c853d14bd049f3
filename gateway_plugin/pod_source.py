"""What the pod actuator needs of an orchestrator: a function's pods and an in-place CPU
change.  Its own module so that the sources (``kube_pods``, ``local_pods``) and the
actuator that picks one (``actuators.make_actuator``) do not import each other."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PodInfo:
    """A function's pod as the orchestrator reports it."""
    name: str
    control_url: str  # http://POD_IP:8082: the pod zygote's control port (QUART_CONTROL_PORT)
    cpu_millis: int | None  # CPU limit in force (None: none)
    cpu_request_millis: int | None = None
    ready: bool = True
    resizable: bool = True  # the orchestrator takes an in-place CPU change now
    new_pod_workers: int = 1  # its QUART_POD_WORKERS: what a new pod of the function starts with


class PodSourceError(RuntimeError):
    pass


class PodSource(Protocol):
    def pods(self, functions: Sequence[str]) -> Mapping[str, Sequence[PodInfo]]: ...

    def resize(self, function: str, pod: PodInfo, cpu_millis: int, wait_s: float = 0.0) -> bool:
        """Set the pod's CPU limit in place; with ``wait_s``, True once it is in force,
        False when the orchestrator cannot now (PodSourceError when refused)."""
