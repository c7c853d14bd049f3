"""The workload a plan is judged on: requests with every node's duration fixed up front.

Durations are resolved *before* any assignment strategy runs, from one seeded
random stream in request/node order, so GSwarm, random and round-robin plans
are compared on exactly the same work (same run, same seed).

Two durations per node:

* ``estimate_s`` -- what the planner and the router may know: the request's
  ``node_execution_times`` entry (the seed's "estimates"), else the model's
  mean from the config;
* ``actual_s`` -- what the node really takes.  Without ``--simulate`` it equals
  the estimate; with ``--simulate`` it is drawn from the model's distribution
  in the config (``inference_time_mean/std``, or ``token_mean/std`` over
  ``tokens_per_second``), falling back to the estimate for a model the config
  gives no timing for.

This module also holds the request generator (Poisson arrivals, workflow
choice by the config's optional ``weight``), used by ``--generate N`` and by
``python -m planner.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .spec import ModelSpec, Request, SystemConfig

__all__ = ["Job", "Workload", "build_workload", "generate_requests", "sample_time_s"]

GENERATOR_EPOCH = datetime(2025, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Job:
    """One request, ready for the simulator."""

    request_id: str
    workflow_id: str
    arrival_s: float
    estimate_s: dict[str, float]
    actual_s: dict[str, float]


@dataclass(frozen=True)
class Workload:
    jobs: tuple[Job, ...]
    mode: str
    simulate: bool
    seed: int


def sample_time_s(model: ModelSpec, rng: np.random.Generator) -> float:
    """One execution time drawn from the model's distribution in the config."""
    if model.inference_time_mean_s is not None:
        mean = model.inference_time_mean_s
        value = (
            float(rng.normal(mean, model.inference_time_std_s))
            if model.inference_time_std_s
            else mean
        )
        return max(0.1 * mean, value)
    if model.token_mean is not None and model.tokens_per_second:
        tokens = (
            float(rng.normal(model.token_mean, model.token_std))
            if model.token_std
            else model.token_mean
        )
        return max(1.0, round(tokens)) / model.tokens_per_second
    raise ValueError(f"model {model.model_id!r} has no timing in the config")


def build_workload(
    config: SystemConfig,
    requests: list[Request],
    *,
    mode: str = "offline",
    simulate: bool = False,
    seed: int = 0,
) -> Workload:
    """Resolve arrivals (offline: all at 0; online: timestamp offsets) and durations."""
    if mode not in ("offline", "online"):
        raise ValueError(f"mode must be 'offline' or 'online', got {mode!r}")
    rng = np.random.default_rng(seed)
    base: datetime | None = None
    if mode == "online" and requests:
        stamps = [r.timestamp for r in requests if r.timestamp is not None]
        base = min(stamps) if stamps else None
    jobs: list[Job] = []
    for req in requests:
        wf = config.workflows[req.workflow_id]
        estimate: dict[str, float] = {}
        actual: dict[str, float] = {}
        for node in wf.nodes:
            model = config.models[node.model]
            est = req.node_execution_times.get(node.node_id)
            if est is None:
                est = model.mean_time_s
            assert est is not None  # parse_requests guarantees one of the two
            estimate[node.node_id] = est
            actual[node.node_id] = (
                sample_time_s(model, rng) if simulate and model.has_timing else est
            )
        arrival = 0.0
        if mode == "online" and base is not None and req.timestamp is not None:
            arrival = max(0.0, (req.timestamp - base).total_seconds())
        jobs.append(Job(req.request_id, req.workflow_id, arrival, estimate, actual))
    jobs.sort(key=lambda j: j.arrival_s)  # stable: file order among equal arrivals
    return Workload(tuple(jobs), mode, simulate, seed)


def generate_requests(
    config: SystemConfig,
    count: int,
    *,
    seed: int = 0,
    duration_s: float = 600.0,
    with_times: bool = True,
) -> list[dict[str, Any]]:
    """``count`` requests in the seed's YAML shape: Poisson arrivals over ``duration_s``.

    Workflows are drawn by their config ``weight`` (default 1 each).  With
    ``with_times`` each request carries ``node_execution_times`` sampled from
    the models' distributions (models without timing are left out).
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = np.random.default_rng(seed)
    wf_ids = list(config.workflows)
    weights = np.array([config.workflows[w].weight for w in wf_ids], dtype=float)
    if weights.sum() <= 0:
        weights = np.ones(len(wf_ids))
    weights /= weights.sum()
    gaps = rng.exponential(duration_s / max(count, 1), size=count)
    arrivals = np.cumsum(gaps)
    if count and arrivals[-1] > duration_s:
        arrivals *= duration_s / arrivals[-1]
    out: list[dict[str, Any]] = []
    for i in range(count):
        wf = config.workflows[wf_ids[int(rng.choice(len(wf_ids), p=weights))]]
        stamp = GENERATOR_EPOCH + timedelta(seconds=float(arrivals[i]))
        item: dict[str, Any] = {
            "request_id": f"req_{i:04d}",
            "timestamp": stamp.isoformat(timespec="milliseconds"),
            "workflow_id": wf.workflow_id,
            "input_data": {"user_prompt": f"Sample prompt for request {i}"},
        }
        if with_times:
            times = {}
            for node in wf.nodes:
                model = config.models[node.model]
                if model.has_timing:
                    times[node.node_id] = round(sample_time_s(model, rng), 3)
            item["node_execution_times"] = times
        out.append(item)
    return out
