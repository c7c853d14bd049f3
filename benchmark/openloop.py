"""Open-loop load: requests leave on schedule whatever the responses do.

A closed loop (send, wait, send) slows down when the system does and so hides
queueing delay ("coordinated omission"); here every request has a planned
send time and its latency is measured from that planned time.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import requests


def gamma_arrivals(rate_per_s: float, cv: float, n: int, seed: int = 0) -> np.ndarray:
    """Send offsets (s) with gamma inter-arrivals: mean 1/rate, coefficient of variation cv.

    Gamma(shape k, scale θ) has mean kθ and CV 1/sqrt(k), so k = 1/cv², θ = 1/(rate·k);
    cv = 1 is Poisson, cv > 1 is bursty.
    """
    if rate_per_s <= 0 or cv <= 0 or n < 1:
        raise ValueError("rate, cv and n must be positive")
    k = 1.0 / (cv * cv)
    gaps = np.random.default_rng(seed).gamma(k, 1.0 / (rate_per_s * k), size=n)
    return np.cumsum(gaps) - gaps[0]


@dataclass
class Result:
    planned_s: float
    status: int
    latency_s: float
    error: str = ""


# At most this many requests outstanding, like a load generator's connections (hey -c,
# wrk -c): the 65th request of a burst waits in the client, its latency still counted
# from its planned time.  The rig's simulator models the same bound
# (``SimConfig.client_slots``, ``benchmark/sim/rig.py``): without it the simulator offered
# the gateway every request of a CV 8 burst while the live client held all but 64 back.
# Unbounded (tried with 1,024), a CV 8 burst put ~300 requests at once on the embedded
# gateway, a Python process whose threads then queue for the GIL: its own API stopped
# answering within 2-5 s and the baselines could not scale.
WORKERS = 64


def run(url: str, body: bytes, offsets: np.ndarray, workers: int = WORKERS,
        timeout_s: float = 60.0,
        headers: dict[str, str] | None = None,
        on_done: Callable[[Result], None] | None = None,
        start_at: float | None = None, stop: threading.Event | None = None) -> list[Result]:
    """``start_at``: the ``time.perf_counter()`` the offsets count from (default 50 ms after
    the call); a caller that times other events (faults) passes its own, so both share one
    clock exactly rather than to within a thread's wake-up. ``stop``: once set, no further
    request is sent (those in flight finish), so a caller whose checks are done need not
    wait out the schedule."""
    stop = stop or threading.Event()
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=workers))
    hdrs = headers or {"Content-Type": "application/json"}
    lock = threading.Lock()
    results: list[Result] = []
    start = time.perf_counter() + 0.05 if start_at is None else start_at

    def one(off: float) -> None:
        planned = start + off
        delay = planned - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            r = session.post(url, data=body, headers=hdrs, timeout=timeout_s)
            res = Result(off, r.status_code, time.perf_counter() - planned)
        except requests.RequestException as e:
            res = Result(off, 0, time.perf_counter() - planned, type(e).__name__)
        with lock:
            results.append(res)
        if on_done:
            on_done(res)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for off in offsets:
            # submit on schedule so that a slow system cannot delay later sends
            wait = start + float(off) - 0.01 - time.perf_counter()
            if stop.wait(wait) if wait > 0 else stop.is_set():
                break
            pool.submit(one, float(off))
    return sorted(results, key=lambda r: r.planned_s)
