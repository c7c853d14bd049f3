"""Pure scaling policies of the Quart gateway plugin: metrics in, decisions out, no I/O.

The control loop, the simulator and the tests call the same code.  Nothing in
this package reads a clock, a file, Redis or the network: time arrives as
``now_s``/``dt_s``, state arrives and leaves as plain (JSON-able) dataclasses.

Equation map (numbering follows the Quart paper's components as named in the
seed notes; the paper text is unavailable, so each form is derived and cited
where it is implemented):

=========  ==============================================  =======================
Eq. 1      M/M/c stage delay, Erlang C                      ``mmc``
Eq. 2      relative latency error vs the stage's SLO share  ``pid.relative_error``
Eq. 3      PID correction of the M/M/c replica count        ``pid``, ``replica_corrector``
Eq. 4-5    GAT attention and node update for arrival CV     ``cv_predict``
Eq. 6      CV-based smoothing (Allen-Cunneen rescaling)     ``smoothing``
Eq. 7-10   CPU demand of a consolidated replica (Kingman)   ``cpu_compensation``
Alg. 2     incremental CPU allocation with rollback         ``cpu_compensation.compensate``
=========  ==============================================  =======================

``chain.decide`` runs ReplicaCorrector -> PipelineSmoother -> CPUCompensator.
"""

from typing import Any

from .observation import PipelineObservation, StageObservation

_FROM_CHAIN = ("QuartConfig", "QuartState", "StageDecision", "decide")


def __getattr__(name: str) -> Any:
    # chain imports torch (for the GAT); load it only when asked, so that a
    # caller of mmc or pid alone does not pay seconds of import time.
    if name in _FROM_CHAIN:
        from . import chain

        return getattr(chain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PipelineObservation",
    "QuartConfig",
    "QuartState",
    "StageDecision",
    "StageObservation",
    "decide",
]
