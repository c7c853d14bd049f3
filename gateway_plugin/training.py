"""Retraining the CV predictor on observed history: one function for the plugin and the
simulator.

The live plugin (``controller.Controller.train``, every ``QUART_TRAIN_EVERY``
periods, on the history kept in Redis) and the benchmark's Quart system
(``benchmark/systems/quart.py``, on the history it kept in the simulation)
both call ``retrain``, so a simulated Quart learns exactly as the deployed
one does: samples from the history (``chain.samples_from_history``), nothing
until there are ``MIN_SAMPLES`` of them, then ``chain.with_trained_predictor``,
which keeps whichever predictor wins on held-out data: whole pipelines held out
when there are two or more, else the later windows of the one pipeline (a
user with a single pipeline gets the GAT too).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway_plugin.policies import chain
from gateway_plugin.policies.observation import PipelineObservation

MIN_SAMPLES = 40  # GAT training needs a few dozen (pipeline, next period) pairs
MIN_PIPELINES = 1  # one pipeline is held out by time, several by pipeline
EPOCHS = 100


class TrainingError(ValueError):
    """Training ran and failed (e.g. no held-out stage has an observed CV yet): the
    current predictor stays."""

    def __init__(self, message: str, samples: int, pipelines: int) -> None:
        super().__init__(message)
        self.samples, self.pipelines = samples, pipelines


@dataclass(frozen=True)
class TrainingRound:
    samples: int
    pipelines: int
    errors: Mapping[str, float] | None = None  # validation MAE per predictor; None: not trained
    seconds: float = 0.0

    @property
    def holdout(self) -> str:
        """What validation held out: whole ``pipelines``, or a lone pipeline's later windows."""
        return "time" if self.pipelines == 1 else "pipelines"

    @property
    def trained(self) -> bool:
        return self.errors is not None


def retrain(state: chain.QuartState, history: Sequence[PipelineObservation], *,
            min_samples: int = MIN_SAMPLES, epochs: int = EPOCHS
            ) -> tuple[chain.QuartState, TrainingRound]:
    """The state with a retrained predictor (or unchanged, with too few samples) and what
    the round saw; ``TrainingError`` when training itself fails."""
    samples = chain.samples_from_history(history)
    groups = len({s.group for s in samples})
    if len(samples) < min_samples or groups < MIN_PIPELINES:
        return state, TrainingRound(len(samples), groups)
    t0 = time.perf_counter()
    try:
        state, errors = chain.with_trained_predictor(state, samples, epochs=epochs)
    except ValueError as exc:
        raise TrainingError(str(exc), len(samples), groups) from exc
    return state, TrainingRound(len(samples), groups, errors, time.perf_counter() - t0)
