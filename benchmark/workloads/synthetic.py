"""Synthetic traces in the public Azure Functions layouts (not real trace data).

The real traces are large downloads under their own licence; the simulator's
scale target (1,000 functions x 60 minutes) and the tests need traces that
are small, seeded and shipped.  These generators write the *public layout*
with numbers shaped after what the trace's paper reports (Shahrad et al.,
*Serverless in the Wild*, USENIX ATC 2020):

* per-function rates span orders of magnitude (the paper: 8 orders across
  all functions, most functions invoked very rarely): log-normal mean rates,
  median ``median_per_min`` and log-sd ``sigma``;
* trigger groups in the paper's shares of functions (as tabulated by
  M. Shilkov, *Serverless in the Wild: Azure Functions Production Usage
  Statistics*, 2020): HTTP 55 %, timer 16 %, queue 15 %, orchestration 7 %,
  event 2 %, others 5 %; timer functions fire once every 1, 5, 15 or 60 min;
* bursty minutes: a two-state (calm/burst) Markov chain per function with a
  per-function burst amplitude, so bursts last a few minutes;
* a few functions idle for the whole window;
* apps of 1, 2, 3, ... functions in the paper's proportions (54 % of apps
  have one function).

Ids are 64-hex SHA-256 strings of seeded labels, like the real HMAC ids.
Everything is vectorised over functions (the chain loops over minutes only),
so 1,000 functions x 60 minutes take milliseconds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from benchmark.workloads.azure import INVOCATION_HEADER, MinuteTrace

__all__ = [
    "SAMPLE_FILES",
    "TRIGGER_SHARES",
    "synthetic_azure",
    "synthetic_invocations",
    "write_samples",
]

TRIGGER_SHARES = {"http": 0.55, "timer": 0.16, "queue": 0.15, "orchestration": 0.07,
                  "event": 0.02, "others": 0.05}
_APP_SIZES = (1, 2, 3, 4, 5, 8, 12)                       # 4-5, 6-10 and 11+ folded
_APP_SIZE_SHARES = (0.54, 0.16, 0.10, 0.04, 0.04, 0.07, 0.05)
_TIMER_PERIODS_MIN = (1, 5, 15, 60)
SAMPLE_FILES = {"minutes": "invocations_per_function_md.anon.synthetic.csv",
                "invocations": "AzureFunctionsInvocationTrace.synthetic.txt"}


def _hex_ids(label: str, n: int, seed: int) -> list[str]:
    return [hashlib.sha256(f"synthetic-{label}-{seed}-{i}".encode()).hexdigest()
            for i in range(n)]


def _apps_for(n_functions: int, rng: np.random.Generator) -> np.ndarray:
    """App index of each function, apps sized by the paper's functions-per-app shares."""
    sizes = rng.choice(_APP_SIZES, size=n_functions, p=_APP_SIZE_SHARES)
    app = np.repeat(np.arange(n_functions), sizes)[:n_functions]
    return app


def _check_azure(n_functions: int, minutes: int, median_per_min: float, sigma: float,
                 burst_prob: float, burst_minutes: float, idle_fraction: float) -> None:
    if n_functions < 1 or minutes < 1:
        raise ValueError(f"n_functions and minutes must be >= 1, got {n_functions}, {minutes}")
    if median_per_min <= 0 or sigma < 0 or not 0 <= burst_prob <= 1 or burst_minutes < 1:
        raise ValueError("median_per_min > 0, sigma >= 0, 0 <= burst_prob <= 1 and "
                         "burst_minutes >= 1 are required")
    if not 0 <= idle_fraction < 1:
        raise ValueError(f"idle_fraction must be in [0, 1), got {idle_fraction}")


def _burst_chain(u: np.ndarray, stay: float, burst_prob: float) -> np.ndarray:
    """Which minutes are bursty: a calm/burst chain, one step per minute for all functions
    at once, driven by the uniform draws ``u`` [functions, minutes]."""
    f, m = u.shape
    burst = np.zeros((f, m), dtype=bool)
    state = np.zeros(f, dtype=bool)
    for j in range(m):
        state = np.where(state, u[:, j] < stay, u[:, j] < burst_prob)
        burst[:, j] = state
    return burst


def synthetic_azure(n_functions: int, minutes: int, seed: int = 0, *,
                    median_per_min: float = 1.0, sigma: float = 2.0,
                    burst_prob: float = 0.03, burst_minutes: float = 3.0,
                    burst_scale: float = 4.0, idle_fraction: float = 0.03,
                    out: str | Path | None = None) -> MinuteTrace:
    """A per-minute count trace in the 2019 layout; written to ``out`` when given.

    A calm minute of function f has Poisson(λ_f) invocations, λ_f ~
    LogNormal(ln median_per_min, sigma); a burst minute has Poisson(λ_f·A_f)
    with A_f = 1 + burst_scale·(1 + Lomax(2)) (capped at 100).  A calm minute
    turns bursty with probability ``burst_prob``; a burst lasts
    ``burst_minutes`` on average (geometric).
    """
    _check_azure(n_functions, minutes, median_per_min, sigma, burst_prob, burst_minutes,
                 idle_fraction)
    rng = np.random.default_rng(seed)
    f, m = int(n_functions), int(minutes)
    rate = rng.lognormal(np.log(median_per_min), sigma, f)
    trig_names = list(TRIGGER_SHARES)
    trig = rng.choice(len(trig_names), size=f, p=list(TRIGGER_SHARES.values()))
    amp = np.minimum(1.0 + burst_scale * (1.0 + rng.pareto(2.0, f)), 100.0)
    # calm/burst chain, one step per minute for all functions at once
    burst = _burst_chain(rng.random((f, m)), 1.0 - 1.0 / burst_minutes, burst_prob)
    lam = rate[:, None] * np.where(burst, amp[:, None], 1.0)
    counts = rng.poisson(lam).astype(np.int64)
    timer = trig == trig_names.index("timer")
    if timer.any():
        period = rng.choice(_TIMER_PERIODS_MIN, size=int(timer.sum()))
        phase = (rng.random(int(timer.sum())) * period).astype(np.int64)
        cols = np.arange(m)[None, :]
        counts[timer] = ((cols - phase[:, None]) % period[:, None] == 0).astype(np.int64)
    n_idle = round(f * idle_fraction)
    if idle_fraction > 0 and f >= 10:
        n_idle = max(n_idle, 1)
    if n_idle:
        counts[rng.choice(f, size=n_idle, replace=False)] = 0
    app = _apps_for(f, rng)
    n_apps = int(app.max()) + 1
    owner_of_app = np.minimum(np.arange(n_apps) // 2 + rng.integers(0, 2, n_apps),
                              max(n_apps - 1, 0))
    owners, apps = _hex_ids("owner", n_apps, seed), _hex_ids("app", n_apps, seed)
    trace = MinuteTrace(tuple(owners[owner_of_app[a]] for a in app),
                        tuple(apps[a] for a in app), tuple(_hex_ids("function", f, seed)),
                        tuple(trig_names[t] for t in trig), counts,
                        source=f"synthetic-azure-f{f}-m{m}-seed{seed}")
    if out is not None:
        digest = trace.write(out)
        trace = MinuteTrace(trace.owners, trace.apps, trace.functions, trace.triggers,
                            trace.counts, source=str(out), source_sha256=digest)
    return trace


def synthetic_invocations(n_functions: int, minutes: int, seed: int = 0, *,
                          median_per_s: float = 0.1, sigma: float = 1.0,
                          cvs: tuple[float, ...] = (1.0, 2.0, 4.0)) -> str:
    """Per-invocation CSV text in the 2021 layout (``app,func,end_timestamp,duration``).

    Each function is a gamma renewal process (rate log-normal around
    ``median_per_s``, CV drawn from ``cvs``); durations are log-normal with a
    median of 0.6 s (half of Azure functions run in under a second,
    ATC'20), written in milliseconds like the public file; rows are sorted
    by end time.
    """
    from benchmark.workloads.generators import renewal_points

    if n_functions < 1 or minutes < 1:
        raise ValueError(f"n_functions and minutes must be >= 1, got {n_functions}, {minutes}")
    rng = np.random.default_rng(seed)
    horizon = minutes * 60.0
    app = _apps_for(n_functions, rng)
    apps = _hex_ids("app2021", int(app.max()) + 1, seed)
    funcs = _hex_ids("func2021", n_functions, seed)
    rates = rng.lognormal(np.log(median_per_s), sigma, n_functions)
    fcv = rng.choice(cvs, size=n_functions)
    starts, who = [], []
    for i in range(n_functions):
        pts = renewal_points(rng, float(fcv[i]), horizon, mean_gap=1.0 / rates[i])
        starts.append(pts)
        who.append(np.full(len(pts), i))
    start = np.concatenate(starts)
    fn = np.concatenate(who)
    dur = np.round(rng.lognormal(np.log(0.6), 1.2, len(start)), 3)
    end = start + dur
    order = np.argsort(end, kind="stable")
    lines = [",".join(INVOCATION_HEADER)]
    for k in order.tolist():
        lines.append(f"{apps[app[fn[k]]]},{funcs[fn[k]]},{float(end[k])!r},{dur[k]:.3f}")
    return "\n".join(lines) + "\n"


def write_samples(directory: str | Path) -> dict[str, str]:
    """(Re)write the shipped sample traces; returns file name -> sha256.

    The samples are synthetic, in the public layouts: see samples/README.md.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    minutes = synthetic_azure(12, 30, seed=2019, median_per_min=3.0, sigma=1.5,
                              burst_prob=0.08, idle_fraction=0.1)
    out[SAMPLE_FILES["minutes"]] = minutes.write(d / SAMPLE_FILES["minutes"])
    text = synthetic_invocations(6, 10, seed=2021, median_per_s=0.08)
    (d / SAMPLE_FILES["invocations"]).write_text(text)
    out[SAMPLE_FILES["invocations"]] = hashlib.sha256(text.encode()).hexdigest()
    return out
