"""QuartScaler: ReplicaCorrector -> PipelineSmoother -> CPUCompensator as one pure call.

``decide(observations, state, config) -> (decisions, new_state)`` is what the
control loop runs every period and what the simulator runs at cluster scale.
The state is plain data: ``QuartState.to_json()`` is JSON for Redis, and the
only non-JSON part, the GAT checkpoint, travels as safetensors bytes beside it.

Many pipelines go through one call so the CV predictor runs once, batched
over every pipeline (one padded forward pass), rather than once per pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import cv_predict
from .cpu_compensation import CPUConfig, CPUDecision, CPUInput, CPUState, compensate_pipeline
from .observation import PipelineObservation, StageObservation
from .pid import PIDState
from .replica_corrector import Correction, CorrectorConfig, CorrectorState, correct_pipeline
from .smoothing import (
    Smoothed,
    SmootherConfig,
    SmootherState,
    SmoothingInput,
    smooth_pipeline,
)
from .steps import Step

__all__ = [
    "PipelineState",
    "QuartConfig",
    "QuartState",
    "StageDecision",
    "decide",
    "graph_features",
    "samples_from_history",
    "with_trained_predictor",
]


@dataclass(frozen=True, kw_only=True)
class QuartConfig:
    """One config per component; replica bounds come from ``corrector``."""

    corrector: CorrectorConfig = field(default_factory=CorrectorConfig)
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    cpu: CPUConfig = field(default_factory=CPUConfig)
    smoothing: bool = True
    cpu_compensation: bool = True


@dataclass(slots=True, kw_only=True)
class StageDecision:
    pipeline: str
    name: str
    replicas: int
    cpu: float | None
    predictor: str
    critical: bool
    reason: str
    budget_s: float
    mmc_replicas: int | None
    corrected_replicas: int
    predicted_cv: float | None
    # HPA style: the policy step that set ``replicas`` and the one that moved ``cpu``, as
    # the steps reported them (None: no step moved the value from what the stage has)
    replicas_by: Step | None = None
    cpu_by: Step | None = None


@dataclass(frozen=True)
class PipelineState:
    last_now_s: float | None = None
    corrector: Mapping[str, CorrectorState] = field(default_factory=dict)
    smoother: Mapping[str, SmootherState] = field(default_factory=dict)
    cpu: Mapping[str, CPUState] = field(default_factory=dict)


@dataclass(frozen=True)
class QuartState:
    pipelines: Mapping[str, PipelineState] = field(default_factory=dict)
    predictor: str = "qna"
    predictor_reason: str = "qna: no validated GAT yet"
    gat_checkpoint: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """Everything but the checkpoint, as JSON-ready dicts (store the bytes beside it)."""
        return {
            "predictor": self.predictor,
            "predictor_reason": self.predictor_reason,
            "pipelines": {k: _pipeline_json(v) for k, v in self.pipelines.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], gat_checkpoint: bytes | None = None) -> QuartState:
        pipelines = {}
        for name, p in data.get("pipelines", {}).items():
            pipelines[name] = PipelineState(
                last_now_s=p.get("last_now_s"),
                corrector={
                    k: CorrectorState(
                        pid=PIDState(**v["pid"]),
                        down_streak=v["down_streak"],
                        down_target=v["down_target"],
                        burst_cv=v.get("burst_cv", 0.0),
                        rate_avg=v.get("rate_avg", 0.0),
                        rate_sq_avg=v.get("rate_sq_avg", 0.0),
                    )
                    for k, v in p.get("corrector", {}).items()
                },
                smoother={k: SmootherState(**v) for k, v in p.get("smoother", {}).items()},
                cpu={k: CPUState(**v) for k, v in p.get("cpu", {}).items()},
            )
        return cls(
            pipelines=pipelines,
            predictor=str(data.get("predictor", "qna")),
            predictor_reason=str(data.get("predictor_reason", "")),
            gat_checkpoint=gat_checkpoint,
        )


def _pipeline_json(p: PipelineState) -> dict[str, Any]:
    # dataclasses.asdict deep-copies recursively and costs ~60 ms at 1000 stages;
    # the state classes hold only scalars, so their __dict__ is already JSON.
    return {
        "last_now_s": p.last_now_s,
        "corrector": {
            k: {
                "pid": dict(vars(v.pid)),
                "down_streak": v.down_streak,
                "down_target": v.down_target,
                "burst_cv": v.burst_cv,
                "rate_avg": v.rate_avg,
                "rate_sq_avg": v.rate_sq_avg,
            }
            for k, v in p.corrector.items()
        },
        "smoother": {k: dict(vars(v)) for k, v in p.smoother.items()},
        "cpu": {k: dict(vars(v)) for k, v in p.cpu.items()},
    }


def _plan_cv(predicted: float | None, observed: float | None) -> float | None:
    # CPU for a consolidated stage is planned for the burstiness smoothing expects
    return observed if predicted is None else predicted


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def graph_features(obs: PipelineObservation) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """Raw CV-predictor features (``cv_predict.FEATURES``) and upstream lists of a pipeline."""
    raw = np.array(
        [
            (
                _nan(s.arrival_rate),
                _nan(s.arrival_cv),
                _nan(s.departure_cv),
                _nan(s.service_time_s),
                _nan(s.service_cv),
                float(s.replicas),
                _nan(s.utilisation()),
            )
            for s in obs.stages
        ],
        dtype=np.float64,
    )
    return raw, tuple(tuple(u) for u in obs.upstream())


def samples_from_history(history: Sequence[PipelineObservation]) -> list[cv_predict.CVSample]:
    """Training samples from what the control loop observed: features of a pipeline
    at one period, target its stages' arrival CV at the next period it was seen."""
    by_pipeline: dict[str, list[PipelineObservation]] = {}
    for obs in history:
        by_pipeline.setdefault(obs.name, []).append(obs)
    samples = []
    for group, name in enumerate(sorted(by_pipeline)):
        seq = sorted(by_pipeline[name], key=lambda o: o.now_s)
        for now, nxt in itertools.pairwise(seq):
            if [s.name for s in now.stages] != [s.name for s in nxt.stages]:
                continue  # the pipeline was redeployed with other stages
            raw, upstream = graph_features(now)
            target = np.array([_nan(s.arrival_cv) for s in nxt.stages])
            samples.append(cv_predict.CVSample(raw, upstream, target, group, now.now_s))
    return samples


def with_trained_predictor(
    state: QuartState,
    samples: Sequence[cv_predict.CVSample],
    *,
    epochs: int = 150,
    lr: float = 2e-2,
    seed: int = 0,
    hidden: int = 8,
    heads: int = 2,
) -> tuple[QuartState, dict[str, float]]:
    """Train a GAT, score it and the baselines on held-out data, keep the winner.

    Held out: whole pipelines, or a lone pipeline's later windows (``cv_predict.split_groups``).

    The checkpoint is stored even when a baseline wins, so the next round can
    be compared against it; ``predictor`` says what ``decide`` will use.
    """
    result = cv_predict.train(
        cv_predict.CVGAT(hidden=hidden, heads=heads, seed=seed), samples, epochs, lr, seed
    )
    errors = cv_predict.evaluate(result.model, result.val_samples)
    if not any(math.isfinite(v) for k, v in errors.items() if k != "gat"):
        # no held-out stage had an observed arrival CV (sparse traffic): nothing to
        # validate against, so nothing may replace the predictor in use
        return dataclasses.replace(
            state, predictor_reason=f"{state.predictor}: kept, no held-out stage with an "
                                    "observed arrival CV to validate on"), errors
    name, reason = cv_predict.select_predictor(errors)
    blob = cv_predict.checkpoint_to_bytes(
        result.model,
        {"validation_mae": errors, "epochs": epochs, "best_epoch": result.best_epoch, "seed": seed},
    )
    return dataclasses.replace(
        state, predictor=name, predictor_reason=reason, gat_checkpoint=blob
    ), errors


@functools.lru_cache(maxsize=2)
def _load_gat(blob: bytes) -> cv_predict.CVGAT:
    # A memo, not state: the same bytes always give the same model.
    return cv_predict.checkpoint_from_bytes(blob)[0]


def _predict_cvs(
    observations: Sequence[PipelineObservation], state: QuartState
) -> tuple[list[np.ndarray], str]:
    graphs = [graph_features(o) for o in observations]
    name = state.predictor
    if name == "gat":
        if state.gat_checkpoint is not None:
            return cv_predict.predict(_load_gat(state.gat_checkpoint), graphs), "gat"
        name = "qna"
    if name not in cv_predict.BASELINES:
        name = "qna"
    return cv_predict.baseline_predict_many(name, graphs), name


def decide(
    observations: PipelineObservation | Sequence[PipelineObservation],
    state: QuartState,
    config: QuartConfig,
) -> tuple[dict[str, list[StageDecision]], QuartState]:
    """One control period for one or many pipelines; time comes from ``now_s``."""
    if isinstance(observations, PipelineObservation):
        observations = [observations]
    smoother_cfg = dataclasses.replace(
        config.smoother,
        min_replicas=config.corrector.min_replicas,
        max_replicas=config.corrector.max_replicas,
    )
    if config.smoothing:
        predictions, predictor = _predict_cvs(observations, state)
    else:
        predictions, predictor = [np.full(len(o.stages), np.nan) for o in observations], "none"
    decisions: dict[str, list[StageDecision]] = {}
    new_pipelines = dict(state.pipelines)
    for obs, forecast in zip(observations, predictions, strict=True):
        # plain floats (None for no forecast): numpy scalars are slow one at a time
        predicted = [v if math.isfinite(v) else None for v in forecast.tolist()]
        prev = state.pipelines.get(obs.name, PipelineState())
        decisions[obs.name], new_pipelines[obs.name] = _decide_pipeline(
            obs, predicted, predictor, prev, config, smoother_cfg)
    return decisions, dataclasses.replace(state, pipelines=new_pipelines)


def _elapsed(last_now_s: float | None, now_s: float) -> float | None:
    """Seconds since the pipeline's last period; ``None`` on the first period or when the
    clock went backwards (the PID then skips I and D this period)."""
    if last_now_s is None or now_s < last_now_s:
        return None
    return now_s - last_now_s


def _decide_pipeline(obs: PipelineObservation, predicted: list[float | None], predictor: str,
                     prev: PipelineState, config: QuartConfig,
                     smoother_cfg: SmootherConfig) -> tuple[list[StageDecision], PipelineState]:
    """ReplicaCorrector -> PipelineSmoother -> CPUCompensator for one pipeline.

    Each policy reports the step that moved its value (``steps.Step``); the decision
    names the last one, the smoother's over the corrector's.
    """
    dt = _elapsed(prev.last_now_s, obs.now_s)
    corrections, c_states = correct_pipeline(obs, prev.corrector, dt, config.corrector)
    smoothed: Sequence[Smoothed | None] = [None] * len(corrections)
    s_states: dict[str, SmootherState] = {}
    if config.smoothing:
        smoothed, s_states = _smooth(obs, corrections, predicted, prev.smoother, smoother_cfg)
    replicas = [c.replicas if m is None else m.replicas
                for c, m in zip(corrections, smoothed, strict=True)]
    cpu_out: Sequence[CPUDecision | None] = [None] * len(corrections)
    cpu_states: dict[str, CPUState] = {}
    if config.cpu_compensation:
        cpu_out, cpu_states = _compensate(obs, corrections, replicas, predicted, prev.cpu, config)
    decisions = [
        _stage_decision(obs.name, s, c, m, p, predictor, replicas[i], cpu_out[i])
        for i, (s, c, m, p) in enumerate(zip(obs.stages, corrections, smoothed, predicted,
                                             strict=True))
    ]
    return decisions, PipelineState(last_now_s=obs.now_s, corrector=c_states,
                                    smoother=s_states, cpu=cpu_states)


def _smooth(obs: PipelineObservation, corrections: Sequence[Correction],
            predicted: Sequence[float | None], states: Mapping[str, SmootherState],
            config: SmootherConfig) -> tuple[list[Smoothed], dict[str, SmootherState]]:
    """Eq. 6 on the corrected counts, with the corrector's M/M/c floor and demand."""
    return smooth_pipeline(
        [
            SmoothingInput(
                name=s.name, replicas=c.replicas, budget_s=c.budget_s,
                arrival_rate=s.arrival_rate, service_time_s=s.service_time_s,
                service_cv=s.service_cv, arrival_cv=s.arrival_cv, predicted_cv=p,
                critical=c.critical, mmc_floor=c.mmc_replicas, may_release=not c.missing,
                demand=c.demand,
            )
            for s, c, p in zip(obs.stages, corrections, predicted, strict=True)
        ],
        states,
        config,
    )


def _compensate(obs: PipelineObservation, corrections: Sequence[Correction],
                replicas: Sequence[int], predicted: Sequence[float | None],
                states: Mapping[str, CPUState],
                config: QuartConfig) -> tuple[list[CPUDecision], dict[str, CPUState]]:
    """Eq. 7-10 / Alg. 2 for stages whose smoothed count fell below the corrected one."""
    stat = config.corrector.latency_statistic
    return compensate_pipeline(
        [
            CPUInput(
                name=s.name, replicas_before=c.replicas, replicas_after=r,
                arrival_rate=s.arrival_rate, cpu_s_per_request=s.cpu_s_per_request,
                latency_s=s.latency(stat), arrival_cv=_plan_cv(p, s.arrival_cv),
                service_cv=s.service_cv, cpu_cores=s.cpu_cores,
            )
            for s, c, r, p in zip(obs.stages, corrections, replicas, predicted, strict=True)
        ],
        states,
        config.cpu,
    )


def _stage_decision(pipeline: str, s: StageObservation, c: Correction, m: Smoothed | None,
                    predicted: float | None, predictor: str, replicas: int,
                    cpu: CPUDecision | None) -> StageDecision:
    """One stage's decision: the reasons of every policy that ran, and the steps that set
    the count and the CPU."""
    reason = " | ".join(r for r in (c.reason, "" if m is None else m.reason,
                                    "" if cpu is None else cpu.reason) if r)
    return StageDecision(
        pipeline=pipeline, name=s.name, replicas=replicas,
        cpu=s.cpu_cores if cpu is None else cpu.cpu, predictor=predictor,
        critical=c.critical, reason=reason, budget_s=c.budget_s, mmc_replicas=c.mmc_replicas,
        corrected_replicas=c.replicas, predicted_cv=predicted,
        replicas_by=c.by if m is None or m.by is None else m.by,
        cpu_by=None if cpu is None else cpu.by)
