"""Static, workflow-locality planner (seed 002, "GSwarm static deployment scheduler").

Given models, workflows (DAGs of model calls) and a batch or stream of
requests, it assigns every model permanently to GPUs grouped in servers so
that workflows complete inside one server, then runs the requests on that
plan in a deterministic discrete-event simulation and reports server
efficiency, cross-server communications, utilisation balance, makespan,
throughput and latency.  Quart uses it for initial deployment: ``--stack``
plans our own pipelines (stages as models) and ``--out`` writes a stack.yml
with placement constraints.

Modules, in pipeline order: ``spec`` (inputs, validation), ``workload``
(durations, generator), ``analysis`` (phase 1), ``assign`` (phases 2-3,
with the random and round-robin baselines), ``routing`` (phase 4),
``simulate``, ``metrics``, ``report``, ``stackfile`` and ``cli``.
"""

from .analysis import Analysis, analyse
from .assign import STRATEGIES, Plan, make_plan
from .metrics import Metrics, summarise
from .simulate import simulate
from .spec import PlanInputError, SystemConfig, load_config, load_requests
from .workload import Workload, build_workload

__all__ = [
    "STRATEGIES",
    "Analysis",
    "Metrics",
    "Plan",
    "PlanInputError",
    "SystemConfig",
    "Workload",
    "analyse",
    "build_workload",
    "load_config",
    "load_requests",
    "make_plan",
    "simulate",
    "summarise",
]
