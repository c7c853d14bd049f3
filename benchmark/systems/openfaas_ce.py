"""OpenFaaS Community Edition: a Prometheus alert, AlertManager, and the gateway's step.

CE has no autoscaler process.  Scaling is three stock components in a row,
each modelled here with its shipped configuration:

1. **Prometheus** scrapes the gateway and evaluates one alert rule
   (faas-netes ``chart/openfaas/templates/prometheus-cfg.yaml``, CE branch)::

       alert: APIHighInvocationRate
       expr: sum(rate(gateway_function_invocation_total{code="200"}[10s]))
             BY (function_name) > 5
       for: 5s

   with ``evaluation_interval: 15s`` (the chart's global) and the gateway
   scraped every 5 s (the chart's ``openfaas-pods`` job).  A rule that is
   true starts *pending*; it fires at the first evaluation at least ``for``
   after it became pending; a pending rule that turns false is dropped, a
   firing one is sent as *resolved* (Prometheus alerting rules docs).
   ``rate()`` is PromQL's extrapolated rate (``common.extrapolated_rate``).
2. **AlertManager** (chart ``alertmanager-cfg.yaml``): ``group_by:
   [alertname, cluster, service]`` -- so *all functions share one group* --
   ``group_wait: 5s``, ``group_interval: 10s``, ``repeat_interval: 30s``,
   ``send_resolved: true``.  A new group notifies ``group_wait`` after its
   first alert; afterwards the group is flushed every ``group_interval`` and a
   notification is sent only when the set of firing alerts grew, an alert
   resolved, or ``repeat_interval`` has *passed* since the last one (the
   ``DedupStage.needsUpdate`` rule in alertmanager/notify/notify.go).  The
   comparison is strict and the webhook takes time, so with 10 s / 30 s the
   re-notification comes every 40 s, as users report in
   prometheus/alertmanager#676 and #2647.  Every notification carries every
   alert of the group, and the gateway acts on each.
3. **The gateway** (openfaas/faas ``gateway/handlers/alerthandler.go``,
   ``CalculateReplicas``): ``max = min(com.openfaas.scale.max, 5)``,
   ``step = ceil(max / 100 * com.openfaas.scale.factor)``; a firing alert sets
   ``min(current + step, max)``, a resolved one sets ``com.openfaas.scale.min``.
   The scale endpoint keeps CE functions within 1..5 replicas
   (``gateway/scaling/ranges.go``, ``DefaultMaxReplicas = 5``).  The docs give
   the factor as 20 % (docs.openfaas.com/architecture/autoscaling, CE
   section); the gateway source's ``DefaultScalingFactor`` constant is 10.
   With CE's 5-replica cap both give a step of 1.

The system's period is the scrape interval (each tick is one scrape); rule
evaluations and AlertManager flushes happen on their own clocks and are
processed at the first tick at or after they are due.  With the defaults all
three clocks are multiples of 5 s, so nothing is shifted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_plugin.policies.observation import StageObservation

from .base import Bounds, Target, Tick
from .common import (
    SUCCESS_CODES,
    Samples,
    check_positive,
    clamp,
    counter_of,
    extrapolated_rate,
    push,
    stages,
)

__all__ = ["AlertGroup", "CEState", "OpenFaaSCE", "calculate_replicas"]

CE_MAX_REPLICAS = 5  # gateway/scaling/ranges.go DefaultMaxReplicas
CE_MIN_REPLICAS = 1  # the scale handler raises anything below 1 to 1
SHARED_GROUP = "APIHighInvocationRate/gateway"


def calculate_replicas(
    status: str, current: int, max_replicas: int, min_replicas: int, scaling_factor: float
) -> int:
    """The gateway's ``CalculateReplicas``, operation for operation (float then ceil)."""
    max_replicas = min(max_replicas, CE_MAX_REPLICAS)
    step = math.ceil(float(max_replicas) / 100 * float(scaling_factor))
    if status == "firing" and step > 0:
        return min(current + step, max_replicas)
    return min_replicas


@dataclass(frozen=True)
class AlertGroup:
    """One AlertManager aggregation group and its notification log entry."""

    firing: frozenset[str] = frozenset()
    resolved: frozenset[str] = frozenset()
    next_flush_s: float = 0.0
    notified_firing: frozenset[str] | None = None  # None: never notified
    notified_resolved: frozenset[str] = frozenset()
    notified_at_s: float = -math.inf


@dataclass(frozen=True)
class CEState:
    samples: Mapping[str, Samples] = field(default_factory=dict)
    next_eval_s: float | None = None
    pending_since: Mapping[str, float] = field(default_factory=dict)  # active alerts
    firing: frozenset[str] = frozenset()
    groups: Mapping[str, AlertGroup] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)  # what the gateway last set
    last_action: Mapping[str, str] = field(default_factory=dict)


class OpenFaaSCE:
    """Prometheus rule -> AlertManager -> gateway ``/system/alert``, per function."""

    scaleup = "cold"

    def __init__(
        self,
        bounds: Bounds,
        *,
        name: str = "openfaas-ce",
        threshold_rps: float = 5.0,
        rate_range_s: float = 10.0,
        for_s: float = 5.0,
        scrape_interval_s: float = 5.0,
        evaluation_interval_s: float = 15.0,
        group_wait_s: float = 5.0,
        group_interval_s: float = 10.0,
        repeat_interval_s: float = 30.0,
        send_resolved: bool = True,
        scaling_factor: float = 20.0,
        group_by_function: bool = False,
    ) -> None:
        check_positive("threshold_rps", threshold_rps, allow_zero=True)
        check_positive("for_s", for_s, allow_zero=True)
        check_positive("group_wait_s", group_wait_s, allow_zero=True)
        for label, value in (
            ("rate_range_s", rate_range_s),
            ("scrape_interval_s", scrape_interval_s),
            ("evaluation_interval_s", evaluation_interval_s),
            ("group_interval_s", group_interval_s),
            ("repeat_interval_s", repeat_interval_s),
        ):
            check_positive(label, value)
        if not 0 <= scaling_factor <= 100:
            raise ValueError(f"scaling_factor is a percentage in [0, 100], got {scaling_factor}")
        self.name = name
        self.bounds = bounds
        self.period_s = float(scrape_interval_s)
        self.threshold = float(threshold_rps)
        self.range_s = float(rate_range_s)
        self.for_s = float(for_s)
        self.eval_s = float(evaluation_interval_s)
        self.group_wait_s = float(group_wait_s)
        self.group_interval_s = float(group_interval_s)
        self.repeat_s = float(repeat_interval_s)
        self.send_resolved = send_resolved
        self.factor = float(scaling_factor)
        self.group_by_function = group_by_function
        # com.openfaas.scale.min / max are the harness's bounds, within CE's 1..5
        self.min_label = max(CE_MIN_REPLICAS, bounds.min_replicas)
        self.max_label = bounds.max_replicas

    def initial_state(self) -> CEState:
        return CEState()

    # ------------------------------------------------------------------ Prometheus

    def _evaluate(
        self, state: CEState, now: float, names: list[str]
    ) -> tuple[dict[str, float], frozenset[str], list[str], list[str]]:
        pending = dict(state.pending_since)
        firing = set(state.firing)
        fired: list[str] = []
        resolved: list[str] = []
        for name in names:
            value = extrapolated_rate(state.samples.get(name, ()), now, self.range_s)
            active = value is not None and value > self.threshold
            if active:
                since = pending.setdefault(name, now)
                if name not in firing and now - since >= self.for_s:
                    firing.add(name)
                    fired.append(name)
            else:
                pending.pop(name, None)
                if name in firing:
                    firing.discard(name)
                    resolved.append(name)
        return pending, frozenset(firing), fired, resolved

    # ------------------------------------------------------------------ AlertManager

    def _group_key(self, stage: str) -> str:
        return f"{SHARED_GROUP}/{stage}" if self.group_by_function else SHARED_GROUP

    def _receive(
        self, groups: dict[str, AlertGroup], now: float, fired: list[str], resolved: list[str]
    ) -> None:
        for name in fired:
            key = self._group_key(name)
            g = groups.get(key)
            if g is None:
                g = AlertGroup(next_flush_s=now + self.group_wait_s)
            groups[key] = dataclasses.replace(
                g, firing=g.firing | {name}, resolved=g.resolved - {name}
            )
        for name in resolved:
            key = self._group_key(name)
            g = groups.get(key)
            if g is not None:
                groups[key] = dataclasses.replace(
                    g, firing=g.firing - {name}, resolved=g.resolved | {name}
                )

    def _needs_update(self, g: AlertGroup, now: float) -> bool:
        if g.notified_firing is None:
            return bool(g.firing)
        if not g.firing <= g.notified_firing:
            return True
        if not g.firing:
            return bool(g.notified_firing)
        if self.send_resolved and not g.resolved <= g.notified_resolved:
            return True
        return now - g.notified_at_s > self.repeat_s

    def _flush(self, groups: dict[str, AlertGroup], now: float) -> list[tuple[str, str]]:
        """Flush due groups; the (stage, status) alerts delivered to the gateway, in order."""
        delivered: list[tuple[str, str]] = []
        for key in sorted(groups):
            g = groups[key]
            if now < g.next_flush_s:
                continue
            nxt = g.next_flush_s + self.group_interval_s
            while nxt <= now:  # flushes between two ticks collapse into this one
                nxt += self.group_interval_s
            if self._needs_update(g, now):
                delivered += [(s, "firing") for s in sorted(g.firing)]
                if self.send_resolved:
                    delivered += [(s, "resolved") for s in sorted(g.resolved)]
                g = dataclasses.replace(
                    g,
                    notified_firing=g.firing,
                    notified_resolved=g.resolved,
                    notified_at_s=now,
                )
            # resolved alerts leave the group once flushed; an empty group is gone
            g = dataclasses.replace(g, resolved=frozenset(), next_flush_s=nxt)
            if g.firing:
                groups[key] = g
            else:
                del groups[key]
        return delivered

    # ------------------------------------------------------------------ one scrape

    def decide(self, tick: Tick, state: CEState) -> tuple[dict[str, Target], CEState]:
        """One scrape (``_scrape``); the rule's evaluation and AlertManager's flushes when
        due; the gateway's ``CalculateReplicas`` on each notification (``_gateway``)."""
        now = tick.now_s
        obs = {s.name: s for _, s in stages(tick)}
        names = list(obs)
        samples = self._scrape(tick, state, obs)
        state = dataclasses.replace(state, samples=samples)

        pending, firing = dict(state.pending_since), state.firing
        groups = dict(state.groups)
        next_eval = now if state.next_eval_s is None else state.next_eval_s
        if now >= next_eval:
            pending, firing, fired, resolved = self._evaluate(state, now, names)
            self._receive(groups, now, fired, resolved)
            while next_eval <= now:
                next_eval += self.eval_s
        delivered = self._flush(groups, now)

        replicas, actions = self._gateway(delivered, obs, state, now)
        targets: dict[str, Target] = {}
        for name in names:
            n = replicas.get(name)
            if n is None:
                n = clamp(self.bounds, obs[name].replicas, CE_MIN_REPLICAS, CE_MAX_REPLICAS)
                replicas[name] = n
            alert = "firing" if name in firing else "pending" if name in pending else "inactive"
            reason = f"APIHighInvocationRate {alert}"
            if name in actions:
                reason += f"; last {actions[name]}"
            targets[name] = Target(n, None, reason)
        new_state = CEState(samples=samples, next_eval_s=next_eval, pending_since=pending,
                            firing=firing, groups=groups, replicas=replicas,
                            last_action=actions)
        return targets, new_state

    def _scrape(self, tick: Tick, state: CEState,
                obs: Mapping[str, StageObservation]) -> dict[str, Samples]:
        """Prometheus scrapes each function's success counter (``rate()`` needs the series)."""
        now = tick.now_s
        samples = dict(state.samples)
        keep = self.range_s + 2 * self.period_s
        for name in obs:
            count = counter_of(tick, name, SUCCESS_CODES)
            if count is None:
                # no counter from the harness: integrate the observed arrival rate
                prev = state.samples.get(name, ())
                rate = obs[name].arrival_rate
                if rate is None:
                    continue
                last_t, last_v = prev[-1] if prev else (now - self.period_s, 0.0)
                count = last_v + rate * max(0.0, now - last_t)
            samples[name] = push(state.samples.get(name, ()), now, count, keep)
        return samples

    def _gateway(self, delivered: list[tuple[str, str]], obs: Mapping[str, StageObservation],
                 state: CEState, now: float) -> tuple[dict[str, int], dict[str, str]]:
        """The gateway's ``/system/alert`` handler on each delivered alert, in order."""
        replicas = dict(state.replicas)
        actions = dict(state.last_action)
        for name, status in delivered:
            if name not in obs:
                continue  # the function was removed
            current = replicas.get(name, obs[name].replicas)
            new = calculate_replicas(status, current, self.max_label, self.min_label, self.factor)
            new = clamp(self.bounds, new, CE_MIN_REPLICAS, CE_MAX_REPLICAS)
            replicas[name] = new
            actions[name] = f"{status} alert at {now:g}s: {current} -> {new}"
        return replicas, actions


def build(bounds: Bounds, **options: Any) -> OpenFaaSCE:
    return OpenFaaSCE(bounds, **options)
