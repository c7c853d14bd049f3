"""What happened during the demo's burst: replicas, p99 and the plugin's reasons over time.

Replicas are sampled from the gateway's REST API once a second while the load
runs; p99 per stage comes back from Prometheus afterwards (the gateway's
histogram, ``rate`` over 5 s windows); the reasons are the plugin's decision
records.  Printed as a table and drawn as a PNG (people would rather look).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from rich.console import Console
from rich.table import Table

from quart_faas.metrics_query import bare


@dataclass
class Sampler:
    """Replicas per function, once per ``every_s``, from ``GET /system/functions``."""

    gateway: str
    auth: tuple[str, str]
    every_s: float = 1.0
    rows: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _t: threading.Thread | None = None

    def start(self) -> Sampler:
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fs = requests.get(f"{self.gateway}/system/functions", auth=self.auth,
                                  timeout=2).json()
                self.rows.append((time.time(), {f["name"]: int(f["replicas"]) for f in fs}))
            except (requests.RequestException, ValueError):
                pass
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._t:
            self._t.join()


def p99_series(prometheus: str, start: float, end: float, step_s: float = 2.0
               ) -> dict[str, list[tuple[float, float]]]:
    from datetime import UTC, datetime

    from prometheus_api_client import PrometheusConnect

    prom = PrometheusConnect(url=prometheus, disable_ssl=True)
    q = ("histogram_quantile(0.99, sum by (le, function_name) "
         "(rate(gateway_functions_seconds_bucket[5s])))")
    rows = prom.custom_query_range(q, start_time=datetime.fromtimestamp(start, UTC),
                                   end_time=datetime.fromtimestamp(end, UTC), step=f"{step_s:g}s")
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        pts = [(float(t), float(v)) for t, v in r["values"] if math.isfinite(float(v))]
        out[bare(r["metric"].get("function_name", ""))] = pts
    return out


def _at(series: list[tuple[float, float]], t: float) -> float | None:
    best = [v for ts, v in series if ts <= t]
    return best[-1] if best else None


def report(con: Console, names: list[str], start: float, end: float, sampler: Sampler,
           p99: dict[str, list[tuple[float, float]]], decisions: list[dict],
           offsets: np.ndarray, png: Path, every_s: float = 5.0) -> None:
    t = Table(title="Timeline (replicas from the gateway API, p99 from Prometheus)")
    t.add_column("t s", justify="right")
    for n in names:
        t.add_column(f"{n}\nreplicas", justify="right")
    for n in names:
        t.add_column(f"{n}\np99 ms", justify="right")
    for k in range(int((end - start) // every_s) + 1):
        at = start + k * every_s
        reps = [r for ts, r in sampler.rows if ts <= at + 0.5]
        row = reps[-1] if reps else {}
        vals = [_at(p99.get(n, []), at) for n in names]
        t.add_row(f"{k * every_s:.0f}", *[str(row.get(n, "")) for n in names],
                  *[f"{v * 1e3:.0f}" if v is not None else "" for v in vals])
    con.print(t)
    changes = [d for d in decisions if d.get("action") in ("up", "down") or
               d.get("policy") == "hold"]
    con.print(f"plugin: {len(decisions)} stage decisions in the window, {len(changes)} changes:")
    for d in changes[-20:]:
        when = d.get("t", start) - start
        if d.get("policy") == "hold":
            con.print(f"  {when:6.1f}s  hold: {d.get('reason', '')[:110]}")
            continue
        con.print(f"  {when:6.1f}s  {d['function']}: {d['from']} -> {d['replicas']} "
                  f"[{d['policy']}, CV predictor {d['predictor']}] {d['reason'][:140]}")
    _plot(names, start, end, sampler, p99, offsets, png)
    con.print(f"plot: {png}")


def _plot(names, start, end, sampler, p99, offsets, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    secs = np.arange(0, math.ceil(end - start) + 1)
    ax[0].bar(secs[:-1], np.histogram(offsets, bins=secs)[0], width=1.0, color="0.6")
    ax[0].set_ylabel("requests sent / s")
    ax[0].set_title("Bursty open-loop load (gamma inter-arrivals)")
    for n in names:
        ts = [ts - start for ts, _ in sampler.rows]
        ax[1].step(ts, [r.get(n, 0) for _, r in sampler.rows], where="post", label=n)
        pts = p99.get(n, [])
        ax[2].plot([ts - start for ts, _ in pts], [v * 1e3 for _, v in pts], label=n)
    ax[1].set_ylabel("replicas")
    ax[1].legend(loc="upper left")
    ax[2].set_ylabel("p99 latency (ms)")
    ax[2].set_xlabel("seconds since the burst started")
    ax[2].legend(loc="upper left")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
