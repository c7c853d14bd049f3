"""``GET /metrics``: the seed's three series and a few of ours, read from the model.

A custom collector (prometheus_client's documented way to export values
that live elsewhere) rather than Counter/Gauge objects: the totals are part
of the persisted state, so after a restart ``scheduler_decisions_total``
continues from where it was instead of starting again at 0, and a scrape
can never see a counter that disagrees with the model.

Seed series:
  scheduler_decisions_total       counter  scoring decisions (``dry_run`` ones excluded)
  scheduler_exploration_ratio     gauge    exploratory / decisions over the exploration window
  scheduler_avg_uncertainty       gauge    mean sigma (seconds) over learned (job, gpu) pairs;
                                           NaN before the first observation
Ours:
  scheduler_exploratory_decisions_total, scheduler_capped_decisions_total,
  scheduler_observations_total, scheduler_exploration_cap, scheduler_learned_pairs,
  scheduler_interference_pairs, scheduler_store_up
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scorer.service import ScoringService


class ScorerCollector(Collector):
    def __init__(self, service: ScoringService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service.stats()
        yield CounterMetricFamily("scheduler_decisions", "Scheduling decisions made "
                                  "(POST /v1/score without dry_run)", value=s["decisions"])
        yield GaugeMetricFamily("scheduler_exploration_ratio", "Share of exploratory decisions "
                                "over the last SCHEDULER_EXPLORATION_WINDOW decisions",
                                value=s["exploration_ratio"])
        yield GaugeMetricFamily("scheduler_avg_uncertainty", "Mean posterior standard deviation "
                                "of the runtime (seconds) across learned job-GPU pairs",
                                value=s["avg_uncertainty"])
        yield CounterMetricFamily("scheduler_exploratory_decisions", "Decisions the "
                                  "information gain changed", value=s["exploratory"])
        yield CounterMetricFamily("scheduler_capped_decisions", "Decisions that wanted to "
                                  "explore but hit SCHEDULER_EXPLORATION_CAP", value=s["capped"])
        yield CounterMetricFamily("scheduler_observations", "Runtimes observed "
                                  "(POST /v1/observe)", value=s["observations"])
        yield GaugeMetricFamily("scheduler_exploration_cap", "SCHEDULER_EXPLORATION_CAP",
                                value=self.service.cfg.exploration_cap)
        yield GaugeMetricFamily("scheduler_learned_pairs", "(job_type, gpu_type) pairs with "
                                "at least one observation", value=s["pairs"])
        yield GaugeMetricFamily("scheduler_interference_pairs", "(job_type, co-located "
                                "job_type) slowdowns learned", value=s["interference_pairs"])
        yield GaugeMetricFamily("scheduler_store_up", "1 when the state store answered the "
                                "last time it was asked", value=s["store_up"])


def registry_for(service: ScoringService) -> CollectorRegistry:
    r = CollectorRegistry(auto_describe=False)
    r.register(ScorerCollector(service))
    return r
