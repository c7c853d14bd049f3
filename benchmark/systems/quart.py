"""Quart: the plugin's own policy chain, and its ablations, as compared systems.

The live plugin (``gateway_plugin.controller.Controller``) runs, every
control period, ``policies.chain.decide`` (ReplicaCorrector: M/M/c + PID ->
PipelineSmoother: GAT-predicted CV -> CPUCompensator) on the pipelines'
observations, stores the observations as history, and every
``QUART_TRAIN_EVERY`` periods retrains the CV predictor on that history
(``gateway_plugin.training.retrain``: at least ``MIN_SAMPLES`` samples; validated
on held-out pipelines, or on a lone pipeline's later windows).  This system does
the same with the same functions: its config is built by the controller's own
``quart_config`` from a :class:`gateway_plugin.config.PluginConfig` whose
defaults (period 5 s, PID 2.0/0.3/0.1, tolerance 0.1, scale-down after 3
periods, train every 12 periods) are the plugin's documented defaults.

The ablations switch parts of that chain off (``VARIANTS``):

- ``quart-mmc``: M/M/c only -- PID gains 0, no smoothing, no CPU compensation;
- ``quart-pid``: + PID correction;
- ``quart-smooth``: + GAT-based CV smoothing;
- ``quart``: + CPU compensation, new replicas forked (keys_manager T0);
- ``quart-qna``: all of it, but the CV predictor is never retrained (QNA throughout),
  which isolates what the trained predictor (the GAT when it wins) changes;
- ``quart-nofork``: all of it, but new replicas start cold.

Training costs seconds, so it is optional: ``train_every=0`` never trains
(the predictor then stays the analytical QNA baseline, as in a fresh
plugin).  Without smoothing the predictor is unused and training is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_plugin.config import PluginConfig
from gateway_plugin.controller import quart_config
from gateway_plugin.policies import chain
from gateway_plugin.policies.observation import PipelineObservation
from gateway_plugin.training import MIN_SAMPLES, TrainingError, retrain

from .base import Bounds, Target, Tick
from .common import check_positive, stages

__all__ = ["VARIANTS", "QuartSystem", "QuartSystemState"]

# name -> (pid, smoothing, cpu_compensation, scaleup)
VARIANTS: dict[str, tuple[bool, bool, bool, str]] = {
    "quart-mmc": (False, False, False, "fork"),
    "quart-pid": (True, False, False, "fork"),
    "quart-smooth": (True, True, False, "fork"),
    "quart": (True, True, True, "fork"),
    "quart-nofork": (True, True, True, "cold"),
}

# PluginConfig fields a benchmark may override (the rest are addresses and ports)
TUNABLE = (
    "kp",
    "ki",
    "kd",
    "tolerance",
    "scale_down_periods",
    "latency_statistic",
    "min_cpu",
    "max_cpu",
    "increment_ratio",
)


@dataclass(frozen=True)
class QuartSystemState:
    quart: chain.QuartState = field(default_factory=chain.QuartState)
    history: tuple[PipelineObservation, ...] = ()
    periods: int = 0
    training: Mapping[str, Any] | None = None  # the last training round, for reports
    rounds: tuple[Mapping[str, Any], ...] = ()  # every training round that validated
    in_use: Mapping[str, int] = field(default_factory=dict)  # predictor -> periods it decided


class QuartSystem:
    def __init__(
        self,
        bounds: Bounds,
        *,
        name: str = "quart",
        pid: bool | None = None,
        smoothing: bool | None = None,
        cpu_compensation: bool | None = None,
        scaleup: str | None = None,
        period_s: float | None = None,
        train_every: int | None = None,
        train_epochs: int = 100,
        min_samples: int = MIN_SAMPLES,
        history_max: int = 2000,
        **overrides: Any,
    ) -> None:
        unknown = sorted(set(overrides) - set(TUNABLE))
        if unknown:
            raise TypeError(
                f"{name}: unknown option(s) {', '.join(unknown)}; "
                f"plugin settings that may be set: {', '.join(TUNABLE)}"
            )
        v_pid, v_smooth, v_cpu, v_scaleup = VARIANTS.get(name, VARIANTS["quart"])
        if name == "quart-qna" and train_every is None:
            train_every = 0  # the ablation: the predictor stays QNA
        pid = v_pid if pid is None else pid
        smoothing = v_smooth if smoothing is None else smoothing
        cpu_compensation = v_cpu if cpu_compensation is None else cpu_compensation
        scaleup = v_scaleup if scaleup is None else scaleup
        if scaleup not in ("fork", "cold"):
            raise ValueError(f"scaleup must be 'fork' or 'cold', got {scaleup!r}")
        if train_every is not None and (isinstance(train_every, bool) or train_every < 0):
            raise ValueError(f"train_every must be an int >= 0, got {train_every!r}")
        for label, value in (("train_epochs", train_epochs), ("history_max", history_max)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an int >= 1, got {value!r}")
        check_positive("period_s", period_s)
        cfg = dataclasses.replace(
            PluginConfig(),
            min_replicas=bounds.min_replicas,
            max_replicas=bounds.max_replicas,
            smoothing=smoothing,
            cpu_compensation=cpu_compensation,
            **overrides,
        )
        if not pid:
            cfg = dataclasses.replace(cfg, kp=0.0, ki=0.0, kd=0.0)
        self.name = name
        self.bounds = bounds
        self.scaleup = scaleup
        self.period_s = cfg.period_s if period_s is None else float(period_s)
        self.train_every = cfg.train_every if train_every is None else int(train_every)
        self.train_epochs = train_epochs
        self.min_samples = min_samples
        self.history_max = history_max
        self.smoothing = smoothing
        self.cpu_compensation = cpu_compensation
        self.plugin_config = cfg
        self.config = quart_config(cfg, bounds.max_replicas, self.period_s)

    @property
    def trains(self) -> bool:
        return bool(self.train_every) and self.smoothing

    def initial_state(self) -> QuartSystemState:
        return QuartSystemState()

    def decide(
        self, tick: Tick, state: QuartSystemState
    ) -> tuple[dict[str, Target], QuartSystemState]:
        for _ in stages(tick):  # stage names must be unique across pipelines
            pass
        observations = list(tick.pipelines)
        decisions, quart = chain.decide(observations, state.quart, self.config)
        periods = state.periods + 1
        history, training, rounds = state.history, state.training, state.rounds
        in_use = state.in_use
        if self.smoothing:  # the predictor acts only through the smoother
            in_use = {**in_use, state.quart.predictor: in_use.get(state.quart.predictor, 0) + 1}
        if self.trains:
            history = (history + tuple(observations))[-self.history_max :]
            if periods % self.train_every == 0:
                quart, training = self._train(quart, history, periods, training)
                if training is not None and training.get("period") == periods \
                        and "validation_mae" in training:
                    rounds = (*rounds, training)
        out: dict[str, Target] = {}
        for obs in observations:
            for d in decisions[obs.name]:
                cpu = d.cpu if self.cpu_compensation else None
                out[d.name] = Target(self.bounds.clamp(d.replicas), cpu, d.reason)
        return out, QuartSystemState(quart, history, periods, training, rounds, in_use)

    def report(self, state: QuartSystemState) -> dict[str, Any]:
        """Which CV predictor each training round selected, its validation error, and how
        many control periods each predictor decided (for the comparison's summary)."""
        return predictor_report(state, self.smoothing, self.trains)

    def _train(
        self,
        quart: chain.QuartState,
        history: tuple[PipelineObservation, ...],
        periods: int,
        last: Mapping[str, Any] | None,
    ) -> tuple[chain.QuartState, Mapping[str, Any] | None]:
        """The controller's ``train``: retrain on the history, keep whichever predictor wins."""
        try:
            quart, rnd = retrain(quart, history, min_samples=self.min_samples,
                                 epochs=self.train_epochs)
        except TrainingError as exc:
            # e.g. no held-out stage has an observed CV yet: keep the current predictor
            # (the plugin's loop logs the failed cycle and goes on with the same one)
            return quart, {"period": periods, "samples": exc.samples, "error": str(exc)}
        if rnd.errors is None:
            return quart, last
        info = {
            "period": periods,
            "samples": rnd.samples,
            "pipelines": rnd.pipelines,
            "holdout": rnd.holdout,
            "validation_mae": dict(rnd.errors),
            "predictor": quart.predictor,
            "reason": quart.predictor_reason,
        }
        return quart, info


def predictor_report(state: QuartSystemState, smoothing: bool, trains: bool) -> dict[str, Any]:
    """Selection counts over the validated rounds and the median validation MAE per
    predictor (NaN-free medians over the rounds that scored it)."""
    selected: dict[str, int] = {}
    maes: dict[str, list[float]] = {}
    for r in state.rounds:
        selected[r["predictor"]] = selected.get(r["predictor"], 0) + 1
        for k, v in r["validation_mae"].items():
            if v == v:  # not NaN
                maes.setdefault(k, []).append(float(v))
    median = {k: sorted(v)[len(v) // 2] for k, v in maes.items()}
    holdout = sorted({str(r.get("holdout", "")) for r in state.rounds})
    return {"smoothing": smoothing, "trains": trains, "rounds": len(state.rounds),
            "selected": selected, "median_validation_mae": median, "holdout": holdout,
            "periods_in_use": dict(state.in_use), "final": state.quart.predictor,
            "last_reason": state.quart.predictor_reason}


def build(bounds: Bounds, **options: Any) -> QuartSystem:
    return QuartSystem(bounds, **options)
