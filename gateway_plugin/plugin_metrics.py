"""The plugin's own Prometheus metrics (what it decided, how long a cycle took)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PluginMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.cycle = Histogram("quart_plugin_cycle_seconds", "Duration of one control cycle",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                               registry=r)
        self.decisions = Counter("quart_plugin_decisions", "Stage decisions by the policy that "
                                 "set the value and what happened", ["policy", "action"],
                                 registry=r)
        self.desired = Gauge("quart_plugin_desired_replicas", "Replicas the plugin asked for",
                             ["function_name"], registry=r)
        self.actual = Gauge("quart_plugin_actual_replicas", "Replicas available when it decided",
                            ["function_name"], registry=r)
        self.predicted_cv = Gauge("quart_plugin_predicted_cv",
                                  "Arrival CV predicted for the next period", ["function_name"],
                                  registry=r)
        # what the dashboard compares the observed latency and the CPU allocation with
        self.budget = Gauge("quart_plugin_stage_budget_seconds", "Latency budget of the stage: "
                            "its share of the pipeline SLO, what the PID holds the observed "
                            "statistic to", ["function_name"], registry=r)
        self.cpu = Gauge("quart_plugin_cpu_per_replica", "CPUs per replica (limits.cpu) in "
                         "effect after the cycle", ["function_name"], registry=r)
        self.gat_mae = Gauge("quart_plugin_cv_validation_mae", "Held-out MAE of each CV "
                             "predictor at the last training", ["predictor"], registry=r)
        self.leader = Gauge("quart_plugin_leader", "1 when this instance holds the lock",
                            registry=r)
        self.redis_up = Gauge("quart_plugin_redis_up", "1 when Redis answered last cycle",
                              registry=r)
        self.prometheus_up = Gauge("quart_plugin_prometheus_up",
                                   "1 when Prometheus answered last cycle", registry=r)
        self.alerts = Counter("quart_plugin_alerts", "AlertManager webhooks received",
                              ["status"], registry=r)

        self._stage: dict[str, tuple] = {}
        self._decision: dict[tuple[str, str], Counter] = {}

    def observe_stage(self, fn: str, desired: int, actual: int, cv: float | None,
                      budget_s: float | None = None, cpu: float | None = None) -> None:
        """Label children cached per function: ``labels()`` costs microseconds, times 1,000
        stages per cycle."""
        ch = self._stage.get(fn)
        if ch is None:
            ch = self._stage[fn] = (self.desired.labels(function_name=fn),
                                    self.actual.labels(function_name=fn),
                                    self.predicted_cv.labels(function_name=fn),
                                    self.budget.labels(function_name=fn),
                                    self.cpu.labels(function_name=fn))
        ch[0].set(desired)
        ch[1].set(actual)
        if cv is not None:
            ch[2].set(cv)
        if budget_s is not None:
            ch[3].set(budget_s)
        if cpu is not None:
            ch[4].set(cpu)

    def decided(self, policy: str, action: str) -> None:
        c = self._decision.get((policy, action))
        if c is None:
            c = self._decision[(policy, action)] = self.decisions.labels(policy=policy,
                                                                          action=action)
        c.inc()
