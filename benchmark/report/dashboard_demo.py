"""Synthetic numbers for ``python -m benchmark.report.dashboard_demo --demo``.

Lets someone see (and a test exercise) the dashboard without running a
simulator or a cluster: three systems whose replicas follow bursts with
different lags, so their rolling p99 and queue depth visibly differ.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from typing import IO

import numpy as np

from benchmark.report.dashboard import Dashboard

__all__ = ["demo"]

_DEMO_SYSTEMS = {"quart": (2.0, 0.08), "openfaas-ce": (15.0, 0.15), "knative-kpa": (8.0, 0.12)}


def _demo_system(dash: Dashboard, name: str, seconds: float, sim_s: float, seed: int) -> None:
    """Feed synthetic numbers: bursts every other simulated minute, replicas lagging by ``lag``."""
    lag_s, base_s = _DEMO_SYSTEMS[name]
    rng = np.random.default_rng(seed)
    steps = max(1, int(seconds / 0.05))
    sent = done = failed = 0
    for i in range(1, steps + 1):
        t = sim_s * i / steps
        rate = 20.0 if int(t // 60) % 2 else 4.0
        seen = 20.0 if int(max(0.0, t - lag_s) // 60) % 2 else 4.0
        replicas = {f"stage-{k}": math.ceil(seen / (4.0 if k == 1 else 8.0)) for k in range(3)}
        arrivals = int(rng.poisson(rate * sim_s / steps))
        pressure = rate / seen  # > 1 while replicas still lag the burst
        lat = rng.lognormal(math.log(base_s * pressure**1.5), 0.5, arrivals)
        bad = int(rng.binomial(arrivals, 0.002 * pressure))
        sent, done, failed = sent + arrivals, done + arrivals - bad, failed + bad
        dash.update(
            name,
            progress_s=t,
            sent=sent,
            done=done,
            failed=failed,
            latencies_s=lat[bad:],
            replicas=replicas,
            queue_depth=max(0.0, (pressure - 1.0) * rate),
        )
        time.sleep(seconds / steps)
    dash.finish(name)


def demo(seconds: float = 4.0, dashboard: bool = True, file: IO[str] | None = None) -> None:
    """Three systems run side by side on synthetic numbers (one starts late, to show waiting)."""
    sim_s = 290.0  # ends in a quiet period, after every system has caught up
    with Dashboard(
        _DEMO_SYSTEMS,
        slo_s=0.5,
        duration_s=sim_s,
        dashboard=dashboard,
        file=file,
        title="Quart-FaaS compare (demo, synthetic numbers)",
        window=500,
    ) as dash:
        threads = [
            threading.Thread(target=_demo_system, args=(dash, name, seconds, sim_s, i))
            for i, name in enumerate(_DEMO_SYSTEMS)
        ]
        for i, th in enumerate(threads):
            th.start()
            if i == 0:
                time.sleep(min(0.5, seconds / 4))
        for th in threads:
            th.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.report.dashboard_demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--demo", action="store_true", help="feed synthetic numbers and show it")
    parser.add_argument("--seconds", type=float, default=4.0, help="demo length (wall seconds)")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="show the progress-bar fallback")
    args = parser.parse_args(argv)
    if not args.demo:
        parser.error("nothing to do: the dashboard is fed by `quart-faas compare`; try --demo")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    demo(args.seconds, dashboard=not args.no_dashboard)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
