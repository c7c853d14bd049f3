"""Discrete-event cluster simulator (simpy) driving the compared autoscalers.

One call: :func:`run` (``benchmark/sim/engine.py``).  The model: ``spec``
(what to run), ``model`` (request path and replica lifecycle, as the local
provider), ``cluster`` (nodes, processor-shared CPU, placement), ``prom``
(what Prometheus would answer), ``control`` (Tick in, Target out, through the
plugin's own observation code), ``calibration`` (measured figures),
``recovery`` (recovery time after a failure).
"""
from .engine import default_cluster, run
from .spec import ClusterSpec, Failure, NodeSpec, PipelineSpec, SimConfig, StageSpec

__all__ = ["ClusterSpec", "Failure", "NodeSpec", "PipelineSpec", "SimConfig", "StageSpec",
           "default_cluster", "run"]
