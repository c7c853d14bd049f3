"""``--scrape-interval`` and ``--control-period``: the clocks of a simulated comparison.

Who reads what in the simulator (``benchmark/sim/engine.py``, ``benchmark/sim/control.py``):

- **Prometheus** scrapes the simulated gateway every ``SimConfig.scrape_s`` (5 s by default,
  the OpenFaaS chart's ``openfaas-pods`` job).  ``--scrape-interval`` sets it for every system
  in the run, so each one that reads Prometheus reads the same samples.
- **Quart** (and every ``quart-*`` ablation) reads ``rate()``/``histogram_quantile`` over those
  scrapes through the plugin's own queries, with the plugin's own window,
  ``max(2 x period, 4 s)`` (``gateway_plugin/controller.py``), and the queue gauge at the last
  scrape; it decides every ``period_s`` (the plugin's ``QUART_CONTROL_PERIOD_S``, 5 s).
  ``--control-period`` sets that period.  What the plugin counts in periods keeps its length
  in seconds: scale-down after 15 s (``QUART_SCALE_DOWN_PERIODS``) and a retraining every 60 s
  (``QUART_TRAIN_EVERY``; ``quart-qna`` still never retrains), so the ablation changes how
  often Quart reads and acts, not how long it waits.
- **openfaas-ce** evaluates its alert rule on the scraped success counter; its tick *is* a
  scrape, so its period is the scrape interval.  Its rule evaluation (15 s), ``for`` (5 s) and
  AlertManager's clocks stay as the chart ships them.
- **openfaas-pro-rps / -capacity** read the scraped counter / in-flight gauge (the latest
  scrape at each query), but keep their own 5 s query period: the capacity rule's subquery
  step, ``max_over_time(inflight[45s:5s])``, is the chart's and does not follow the scrape.
- **knative-kpa** and **ray-serve** read their platforms' own concurrency meters (0.1 s
  samples, ``benchmark/sim/concurrency.py``), not Prometheus: KPA's 2 s tick and 60 s / 6 s
  windows and Ray Serve's 1 s loop are unchanged.  **static** is sized once.

Live mode takes neither option: there the stack's own Prometheus and the plugin's
environment set the clocks (``benchmark/live``).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway_plugin.config import PluginConfig
from gateway_plugin.policies.burst import rate_window_s

if TYPE_CHECKING:
    from benchmark.sim.spec import SimConfig

__all__ = ["DEFAULT_SCRAPE_S", "Clocks", "add_arguments", "from_args"]

DEFAULT_SCRAPE_S = 5.0  # SimConfig.scrape_s (simpy is imported only when a simulation runs)
_PLUGIN = PluginConfig()
QUART_DEFAULT_PERIOD_S = _PLUGIN.period_s  # 5 s
# the plugin's defaults counted in periods, as seconds at its default period
SCALE_DOWN_S = _PLUGIN.scale_down_periods * QUART_DEFAULT_PERIOD_S  # 3 periods: 15 s
TRAIN_EVERY_S = _PLUGIN.train_every * QUART_DEFAULT_PERIOD_S  # 12 periods: 60 s


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scrape-interval", type=float, default=None, metavar="S",
                   help="simulated Prometheus scrape interval in seconds, the same for every "
                        f"system that reads Prometheus (default {DEFAULT_SCRAPE_S:g})")
    p.add_argument("--control-period", type=float, default=None, metavar="S",
                   help="Quart's control period in seconds (default: the plugin's, 5); its "
                        "rate window is max(2 x period, 4 s), as the plugin's")


def _seconds(flag: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag} must be a finite number of seconds > 0, got {value:g}")
    return float(value)


@dataclass(frozen=True)
class Clocks:
    """The scrape interval of a simulated run and Quart's control period (None: the
    plugin's default)."""

    scrape_s: float = DEFAULT_SCRAPE_S
    quart_period_s: float | None = None

    def sim_config(self) -> SimConfig:
        from benchmark.sim.spec import SimConfig

        return SimConfig(scrape_s=self.scrape_s)

    def options(self, system: str) -> dict[str, Any]:
        """The system's build options that follow these clocks (``{}``: none do)."""
        if system.startswith("quart") and self.quart_period_s is not None:
            p = self.quart_period_s
            out: dict[str, Any] = {"period_s": p,
                                   "scale_down_periods": max(1, round(SCALE_DOWN_S / p))}
            if system != "quart-qna":  # the ablation that never retrains stays so
                out["train_every"] = max(1, round(TRAIN_EVERY_S / p))
            return out
        if system == "openfaas-ce":  # its tick is one scrape
            return {"scrape_interval_s": self.scrape_s}
        return {}

    def check(self, systems: list[str]) -> None:
        """A Quart rate window must hold two scrapes, or ``rate()`` has nothing to answer."""
        if not any(n.startswith("quart") for n in systems):
            return
        period = QUART_DEFAULT_PERIOD_S if self.quart_period_s is None else self.quart_period_s
        window = rate_window_s(period)
        if window < 2 * self.scrape_s:
            raise ValueError(
                f"Quart's rate window at a {period:g} s period, {window:g} s, "
                f"holds fewer than two scrapes {self.scrape_s:g} s apart, so rate() would answer "
                f"nothing: use --scrape-interval <= {window / 2:g} or a longer --control-period")

    def describe(self) -> str:
        q = (f"{QUART_DEFAULT_PERIOD_S:g} (plugin default)" if self.quart_period_s is None
             else f"{self.quart_period_s:g}")
        return (f"clocks: Prometheus scrape {self.scrape_s:g} s, read by quart*, openfaas-ce "
                f"(one tick a scrape) and openfaas-pro-* (every 5 s); quart period {q} s; "
                "knative-kpa 2 s and ray-serve 1 s on their own meters")


def from_args(a: argparse.Namespace) -> Clocks:
    """The flags, checked; live mode refuses them (its clocks are the stack's own)."""
    given = [f for f, v in (("--scrape-interval", a.scrape_interval),
                            ("--control-period", a.control_period)) if v is not None]
    if given and a.mode == "live":
        raise ValueError(f"{' and '.join(given)}: simulator only (--mode sim); live, the "
                         "stack's Prometheus and QUART_CONTROL_PERIOD_S set them")
    scrape = DEFAULT_SCRAPE_S if a.scrape_interval is None else \
        _seconds("--scrape-interval", a.scrape_interval)
    period = None if a.control_period is None else _seconds("--control-period", a.control_period)
    return Clocks(scrape, period)
