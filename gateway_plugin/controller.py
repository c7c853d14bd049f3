"""One control cycle: read, decide, act, remember.

  leader lock -> functions and pipelines (gateway API) -> metrics (Prometheus)
  -> policies.chain.decide (ReplicaCorrector -> PipelineSmoother -> CPUCompensator)
  -> scale / set CPU through the gateway -> state, decisions, history to Redis

Failure rules: Prometheus down -> hold (no actuation at all, so never a
scale-down on missing data); gateway errors -> the call is retried with
backoff by ``Gateway`` and the cycle records the failure (the next cycle
re-applies the same idempotent targets); Redis down -> the store keeps
everything in memory and writes it back later.  A restarted plugin loads
its PID/smoother/CPU state, the GAT and the last decisions from Redis, so
steady load stays steady across a ``kill -9``.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from gateway_plugin import observe
from gateway_plugin.actuate import Function, Gateway, GatewayError, Pipeline
from gateway_plugin.actuators import Actuator, GatewayActuator
from gateway_plugin.config import PluginConfig
from gateway_plugin.metrics_in import MetricsUnavailable, PrometheusReader
from gateway_plugin.plugin_metrics import PluginMetrics
from gateway_plugin.policies import chain, idle
from gateway_plugin.policies.burst import rate_window_s
from gateway_plugin.policies.cpu_compensation import CPUConfig
from gateway_plugin.policies.observation import PipelineObservation
from gateway_plugin.policies.pid import PIDConfig
from gateway_plugin.policies.pool_hint import pool_hint
from gateway_plugin.policies.replica_corrector import CorrectorConfig
from gateway_plugin.policies.steps import Step
from gateway_plugin.store import Store
from gateway_plugin.trainer import BackgroundTrainer, Trained, adopt, parse_history, train_on
from gateway_plugin.training import MIN_SAMPLES
from gateway_plugin.warm_pool import PoolHints

__all__ = ["MIN_SAMPLES", "Controller", "observation_json", "quart_config"]

log = logging.getLogger("gateway_plugin")
ROUNDS_KEPT = 200  # validated training rounds kept in gat_meta (GET /predictor)


def quart_config(cfg: PluginConfig, max_replicas: int,
                 period_s: float | None = None) -> chain.QuartConfig:
    """The policies' settings; ``period_s`` when the caller runs at another period than
    ``cfg``'s (the simulator's ``QuartSystem``): the rates' window follows it."""
    return chain.QuartConfig(
        corrector=CorrectorConfig(
            pid=PIDConfig(kp=cfg.kp, ki=cfg.ki, kd=cfg.kd),
            min_replicas=min(cfg.min_replicas, max_replicas), max_replicas=max_replicas,
            tolerance=cfg.tolerance, scale_down_periods=cfg.scale_down_periods,
            latency_statistic=cfg.latency_statistic,
            rate_window_s=rate_window_s(cfg.period_s if period_s is None else period_s)),
        cpu=CPUConfig(min_cpu=cfg.min_cpu, max_cpu=cfg.max_cpu,
                      increment_ratio=cfg.increment_ratio),
        smoothing=cfg.smoothing, cpu_compensation=cfg.cpu_compensation)


class Controller:
    def __init__(self, cfg: PluginConfig, gateway: Gateway, reader: PrometheusReader,
                 store: Store, metrics: PluginMetrics | None = None, clock=time.time,
                 actuator: Actuator | None = None) -> None:
        self.cfg, self.gw, self.reader, self.store = cfg, gateway, reader, store
        self.actuator = actuator or GatewayActuator(gateway)
        self.metrics = metrics or PluginMetrics()
        self.clock = clock
        self.lock = threading.Lock()
        self.state = chain.QuartState()
        self.gat_meta: dict[str, Any] | None = None
        self.last: dict[str, dict[str, Any]] = {}
        self.active: dict[str, float] = {}  # when each function was last seen active
        self.hints = PoolHints(cfg.keys_socket)
        self.pool: dict[str, int] = {}  # workers keys_manager keeps pre-forked, per function
        self.memory: dict[str, observe.ServiceMemory] = {}
        self.cycles = 0
        self.functions: frozenset[str] | None = None  # the gateway's, as of the last listing
        self.ce: bool | None = None  # detected at the first cycle that reaches the gateway
        self.cpu_actuation, self.cpu_reason = False, "not detected yet"
        self.qcfg = quart_config(cfg, cfg.max_replicas)
        self.trainer = BackgroundTrainer(cfg.redis_url, store.p) if cfg.train_background \
            else None
        self.restore()

    def _rate_window(self, window_s: float) -> None:
        """The corrector judges burstiness by the window the rates were read over: the
        reader widens it to two scrape intervals where the period's is shorter."""
        c = self.qcfg.corrector
        if window_s > 0 and window_s != c.rate_window_s:
            self.qcfg = dataclasses.replace(
                self.qcfg, corrector=dataclasses.replace(c, rate_window_s=window_s))

    def _detect(self) -> None:
        """CE caps replicas at 5 and enforces limits.cpu through the orchestrator; the
        embedded provider has no cap and says whether it can enforce CPU quotas."""
        try:
            self.ce = self.gw.is_community_edition()
            caps = {} if self.ce else self.gw.capabilities()
        except GatewayError:
            return
        cpu = caps.get("cpu_limits", {})
        self.cpu_actuation = True if self.ce else bool(cpu.get("available"))
        self.cpu_reason = ("a stock gateway: limits.cpu where its status has envVars" if self.ce
                           else cpu.get("reason") or "cgroup quotas")
        max_r = min(self.cfg.max_replicas, self.cfg.ce_max_replicas) if self.ce \
            else self.cfg.max_replicas
        if self.actuator.counts_workers:  # replicas are workers; the CE cap bounds pods
            self.cpu_actuation = True
            self.cpu_reason = f"{self.actuator.name}: pods resized in place"
            max_r = self.cfg.max_replicas
        self.qcfg = quart_config(self.cfg, max_r)
        log.info("gateway %s: %s, max %d replicas, CPU actuation %s (%s)", self.cfg.gateway_url,
                 "OpenFaaS CE" if self.ce else "embedded provider", max_r,
                 "on" if self.cpu_actuation else "off", self.cpu_reason)

    # ------------------------------------------------------------------ state

    def restore(self) -> bool:
        doc, ckpt, meta = self.store.load_state()
        if not doc:
            return False
        try:
            self.state = chain.QuartState.from_json(doc.get("quart", {}), ckpt)
        except (KeyError, TypeError, ValueError) as e:
            log.error("state in Redis does not fit this version (%s): starting fresh", e)
            return False
        self.last = dict(doc.get("last", {}))
        self.active = {k: float(v) for k, v in doc.get("active", {}).items()}
        self.memory = {k: observe.ServiceMemory(**v) for k, v in doc.get("service", {}).items()}
        self.cycles = int(doc.get("cycles", 0))
        self.gat_meta = meta
        log.info("restored state of %d pipeline(s), predictor %s, %d cycle(s) so far",
                 len(self.state.pipelines), self.state.predictor, self.cycles)
        return True

    def _state_doc(self) -> dict[str, Any]:
        return {"quart": self.state.to_json(), "last": self.last, "cycles": self.cycles,
                "active": self.active,
                "service": {k: {"mean_s": v.mean_s, "cv": v.cv} for k, v in self.memory.items()}}

    # ------------------------------------------------------------------ the cycle

    def cycle(self, trigger: str = "timer", only: set[str] | None = None) -> dict[str, Any]:
        """``only``: function names (an alert's); the cycle covers their pipelines."""
        with self.lock:
            t0 = time.perf_counter()
            try:
                out = self._cycle(trigger, only)
            finally:
                self.metrics.cycle.observe(time.perf_counter() - t0)
            return out

    def _cycle(self, trigger: str, only: set[str] | None) -> dict[str, Any]:
        leader = self.store.lead(ttl_s=max(3 * self.cfg.period_s, 2.0))
        self.metrics.leader.set(1 if leader else 0)
        self.metrics.redis_up.set(1 if self.store.up else 0)
        if not leader:
            return {"leader": False, "reason": f"{self.store.leader()} leads; standing by"}
        self._adopt_trained()
        try:
            functions = self.gw.functions()
        except GatewayError as e:
            return self._hold(f"gateway unavailable: {e}", "gateway")
        self.functions = frozenset(f.name for f in functions)
        if self.ce is None:
            self._detect()
        functions = self.actuator.view(functions)
        pipelines = [p for p in self.gw.pipelines(functions)
                     if not only or any(f.name in only for f in p.stages)]
        if not pipelines:
            return {"leader": True, "pipelines": 0, "reason": "no annotated pipelines"}
        try:
            fm = self.reader.read(rate_window_s(self.cfg.period_s))
            self.metrics.prometheus_up.set(1)
        except MetricsUnavailable as e:
            self.metrics.prometheus_up.set(0)
            return self._hold(f"metrics unavailable ({e}): holding the last decision",
                              "prometheus")
        self._rate_window(self.reader.last_window_s)
        now = self.clock()
        obs = [observe.build(p, fm, now, self.cfg.slo_s, self.memory) for p in pipelines]
        decisions, self.state = chain.decide(obs, self.state, self.qcfg)
        self.cycles += 1
        records = self._apply(pipelines, decisions, obs, trigger, now)
        history = [observation_json(o) for o in obs]
        due = bool(self.cfg.train_every) and self.cycles % self.cfg.train_every == 0
        if due and self.trainer is None:
            try:
                self.train()
            except (ValueError, RuntimeError) as e:
                # a failed retraining keeps the current predictor; this cycle's state and
                # decisions must still reach Redis
                log.error("GAT training failed, keeping %s: %s", self.state.predictor, e)
        # one round trip for the cycle's history, state and decisions (store.write_cycle)
        self.store.write_cycle(self._state_doc(), self.state.gat_checkpoint, self.gat_meta,
                               history, records)
        if due and self.trainer is not None and not self.trainer.start(self.state):
            log.info("GAT training still running from an earlier cycle: this round skipped")
        return {"leader": True, "pipelines": len(pipelines), "decisions": records}

    def _hold(self, reason: str, missing: str) -> dict[str, Any]:
        """``missing``: the input that is gone (gateway, prometheus), for /healthz."""
        log.warning("%s", reason)
        self.metrics.decisions.labels(policy="hold", action="hold").inc()
        self.store.record_decisions([{"t": self.clock(), "policy": "hold", "reason": reason,
                                      "missing": missing}])
        return {"leader": True, "hold": True, "reason": reason, "missing": missing}

    def _apply(self, pipelines: list[Pipeline], decisions: dict[str, list[chain.StageDecision]],
               obs: list[PipelineObservation], trigger: str, now: float) -> list[dict[str, Any]]:
        records = []
        for p, o in zip(pipelines, obs, strict=True):
            for f, d, s in zip(p.stages, decisions[p.name], o.stages, strict=True):
                rec = self._apply_stage(f, d, s, trigger, now)
                records.append(rec)
        return records

    def _apply_stage(self, f: Function, d: chain.StageDecision, s: Any, trigger: str,
                     now: float) -> dict[str, Any]:
        target, why = function_bounds(d.replicas, f)
        by = d.replicas_by if target == d.replicas else Step(
            policy="bounds", step="function_labels", reason=why)
        target, by = self._idle(f, s, target, by, now)
        act = self.actuator.apply(f, target, d.cpu if self.cpu_actuation else None)
        action, error = act.action, act.error
        pool = self._pool_hint(f, target)
        policy = decision_policy(action, by, d.cpu_by)
        self.metrics.decided(policy, action)
        cpu_now = act.cpu
        self.metrics.observe_stage(f.name, target, f.available, d.predicted_cv, d.budget_s,
                                   cpu_now)
        rec = {"t": now, "trigger": trigger, "pipeline": d.pipeline, "function": f.name,
               "from": f.replicas, "replicas": target, "cpu": d.cpu, "policy": policy,
               "step": None if by is None else by.to_json(),
               "cpu_step": None if d.cpu_by is None else d.cpu_by.to_json(),
               "action": action, "actuator": self.actuator.name, "speeds": list(act.speeds),
               "actuation": act.note, "predictor": d.predictor, "critical": d.critical,
               "reason": d.reason, "error": error, "budget_s": d.budget_s, "pool": pool,
               "predicted_cv": d.predicted_cv,
               "inputs": {"arrival_rate": s.arrival_rate, "latency_mean_s": s.latency_mean_s,
                          "latency_p99_s": s.latency_p99_s, "arrival_cv": s.arrival_cv,
                          "service_time_s": s.service_time_s, "queue_depth": s.queue_depth}}
        self.last[f.name] = {k: rec[k] for k in ("t", "replicas", "cpu", "policy", "reason")}
        return rec

    def _idle(self, f: Function, s: Any, target: int, by: Step | None,
              now: float) -> tuple[int, Step | None]:
        """The last step, after the labels' bounds: scale an idle function to zero when its
        labels opt in (policies/idle.py).  A count raised by someone else since the last
        decision (the gateway waking it from zero) is activity: the call that woke it may
        not be in the metrics yet, and must not be answered by a scale back to zero."""
        woken = f.replicas > int(self.last.get(f.name, {}).get("replicas", f.replicas))
        busy = bool(s.arrival_rate) or bool(s.queue_depth)
        self.active[f.name] = idle.last_active(self.active.get(f.name), now, busy, woken)
        zero, why = idle.scale_to_zero(target, now - self.active[f.name], f.zero_after_s)
        if zero == target:
            return target, by
        return zero, Step(policy="idle", step="scale_to_zero", reason=why)

    def _pool_hint(self, f: Function, target: int) -> int | None:
        """Workers keys_manager keeps pre-forked for ``f``: the forecast of its next scale-up
        (policies/pool_hint.py), sent where the plugin runs beside keys_manager."""
        if self.hints.socket is None:
            return None
        n, _ = pool_hint(target, f.replicas, self.pool.get(f.name))
        self.pool[f.name] = n
        self.hints.send(f.name, n)
        return n

    # ------------------------------------------------------------------ learning

    def close(self) -> None:
        """Stop the training process (a running round is abandoned, not adopted)."""
        if self.trainer is not None:
            self.trainer.close()

    def _adopt_trained(self) -> None:
        """At a cycle's start (under the lock): swap in a finished background round."""
        if self.trainer is None:
            return
        try:
            done = self.trainer.take()
        except (ValueError, RuntimeError, OSError) as e:  # TrainingError, a dead worker
            log.error("GAT training failed, keeping %s: %s: %s", self.state.predictor,
                      type(e).__name__, e)
            return
        if done is not None:
            self._use(done)

    def train(self) -> dict[str, float] | None:
        """Retrain the GAT on the stored history, here and now (tests, the inline path); the
        state keeps whichever predictor wins on held-out pipelines, or a lone pipeline's later
        windows (the GAT only when it beats every baseline)."""
        return self._use(train_on(self.state, parse_history(self.store.history())))

    def _use(self, t: Trained) -> dict[str, float] | None:
        """Adopt a round's predictor, checkpoint and reason together; its errors."""
        self.state, rnd = adopt(self.state, t), t.round
        if rnd.errors is None:
            log.info("GAT: %d training samples from %d pipeline(s), need %d: later",
                     rnd.samples, rnd.pipelines, MIN_SAMPLES)
            return None
        errors = dict(rnd.errors)
        now = self.clock()
        # every validated round, in Redis with the state (the last ROUNDS_KEPT): which
        # predictor each selected and why is the GAT's record, read at GET /predictor
        rounds = list((self.gat_meta or {}).get("rounds", []))[-(ROUNDS_KEPT - 1):] + [{
            "trained_at": now, "predictor": self.state.predictor, "validation_mae": errors,
            "holdout": rnd.holdout, "samples": rnd.samples}]
        self.gat_meta = {"validation_mae": errors, "samples": rnd.samples,
                         "holdout": rnd.holdout, "trained_at": now,
                         "predictor": self.state.predictor,
                         "reason": self.state.predictor_reason,
                         "seconds": round(rnd.seconds, 3), "rounds": rounds}
        for name, mae in errors.items():
            self.metrics.gat_mae.labels(predictor=name).set(mae)
        log.info("GAT retrained on %d samples: %s -> using %s", rnd.samples, errors,
                 self.state.predictor)
        return errors


def function_bounds(replicas: int, f: Function) -> tuple[int, str]:
    """The last step: the function's own ``com.openfaas.scale.min``/``max`` labels bound
    the policies' count."""
    target = max(f.min_replicas if f.min_replicas else 0, replicas)
    if f.max_replicas:
        target = min(target, f.max_replicas)
    if target > replicas:
        return target, f"com.openfaas.scale.min {f.min_replicas}"
    if target < replicas:
        return target, f"com.openfaas.scale.max {f.max_replicas}"
    return target, ""


def decision_policy(action: str, by: Step | None, cpu_by: Step | None) -> str:
    """A record's ``policy`` (and metric label), from the steps' own reports: the policy
    that set the count when it changes, else the one that moved the CPU, else the one that
    held the count, else ``none``."""
    step = by if action != "steady" else cpu_by or by
    return "none" if step is None else step.policy


def observation_json(o: PipelineObservation) -> dict[str, Any]:
    # the fields are scalars: __dict__ is already JSON (dataclasses.asdict deep-copies, ~20x)
    return {"name": o.name, "slo_s": o.slo_s, "now_s": o.now_s,
            "stages": [dict(s.__dict__) for s in o.stages],
            "edges": None if o.edges is None else [list(e) for e in o.edges]}
