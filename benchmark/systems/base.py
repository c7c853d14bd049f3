"""The one interface every compared autoscaler sits behind.

The simulator (``benchmark/sim``) and the live harness (``benchmark/live``)
both build a :class:`Tick` every control period and apply the returned
:class:`Target` per stage, so a system cannot tell which world it runs in.
Systems are pure, like the plugin's policies: ``decide(tick, state)`` returns
the targets and the next state, and never reads a clock, a socket or a global.

What a system may see is exactly what a real autoscaler could read from the
OpenFaaS gateway's Prometheus metrics: per-stage arrival rate, latency mean
and p99, queue depth, in-flight requests, replicas, the arrival CV, and the
measured per-request service time.  Stage observations reuse the plugin's
:class:`~gateway_plugin.policies.observation.StageObservation`, so Quart sees
in the benchmark what it sees in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway_plugin.policies.observation import PipelineObservation

__all__ = ["Autoscaler", "Bounds", "Target", "Tick"]


@dataclass(frozen=True)
class Bounds:
    """Replica bounds every system is given, so they compete on dynamics not limits.

    OpenFaaS CE caps a function at 5 replicas; a comparison that lets one
    system use 20 and another 5 would measure the cap.  The harness passes
    the same bounds to all systems; a system's own documented cap (CE's 5)
    still applies on top when that system is modelled faithfully.
    """

    min_replicas: int = 1
    max_replicas: int = 20

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, int(n)))


@dataclass(frozen=True)
class Tick:
    """What every system sees at one control period.

    ``in_flight`` is requests queued or in service per stage right now (the
    gateway's ``quart_function_inflight``/queue gauges, Knative's concurrency,
    Ray Serve's ongoing requests).  ``invocations`` is the cumulative count of
    completed invocations per stage and status code class, as the gateway's
    ``gateway_function_invocation_total{code}`` counter, for rules that take
    a ``rate()`` of it (OpenFaaS CE's AlertManager rule).  ``concurrency`` is, per
    stage, the per-second average concurrency (``(end of second, mean)`` pairs)
    closed since the previous tick, as Knative's queue-proxies and Ray Serve's
    replicas report it; given by harnesses that measure it, to systems that set
    ``reads_concurrency``.
    """

    now_s: float
    pipelines: tuple[PipelineObservation, ...]
    in_flight: Mapping[str, float] = field(default_factory=dict)
    invocations: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    concurrency: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Desired replicas (and optionally CPU cores per replica) for one stage."""

    replicas: int
    cpu: float | None = None
    reason: str = ""


@runtime_checkable
class Autoscaler(Protocol):
    """A compared system.

    ``name`` is the key used on the command line (``--systems``) and in
    reports; ``period_s`` is how often ``decide`` runs (its control period
    or evaluation interval); ``scaleup`` is how a new replica starts:
    ``"fork"`` (keys_manager T0, milliseconds) or ``"cold"`` (a fresh
    process loading the stage, seconds) — the platform the system ships on.
    """

    name: str
    period_s: float
    scaleup: str

    def initial_state(self) -> Any: ...

    def decide(self, tick: Tick, state: Any) -> tuple[Mapping[str, Target], Any]: ...
