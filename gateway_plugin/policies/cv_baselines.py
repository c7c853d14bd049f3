"""Analytical arrival-CV baselines over the pipeline graph (what the GAT must beat).

Each predicts every stage's arrival CV for the next period from the raw
per-stage features (``FEATURES``); a source stage keeps its own arrival CV.

* ``copy_upstream``: a stage will see the arrival CV its upstream sees now,
  i.e. queues do not reshape traffic.  Cheap, and visibly wrong at high load.
* ``qna``: Whitt's QNA linking equation for a stage with m servers (Whitt,
  "The Queueing Network Analyzer", Bell Syst. Tech. J. 62(9), 1983):
  ``c_d^2 = 1 + (1 - rho^2)(c_a^2 - 1) + rho^2 (c_s^2 - 1) / sqrt(m)``, and
  for a stage fed by several upstreams the rate-weighted superposition
  ``c_a^2 = sum_j (lambda_j / lambda) c_j^2`` (QNA's asymptotic method).
* ``upstream_departure``: the upstream's *measured* departure CV now, i.e.
  the next period looks like this one.

Numpy only: the running plugin predicts with these until a trained GAT
(``cv_predict``, torch) beats them on held-out pipelines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BASELINES",
    "FEATURES",
    "baseline_predict",
    "baseline_predict_many",
    "qna_departure_cv",
]

FEATURES = (
    "arrival_rate",
    "arrival_cv",
    "departure_cv",
    "service_time_s",
    "service_cv",
    "replicas",
    "utilisation",
)
_RATE, _ACV, _DCV, _SMEAN, _SCV, _REPL, _UTIL = range(len(FEATURES))
BASELINES = ("copy_upstream", "qna", "upstream_departure")


def qna_departure_cv(arrival_cv: float, service_cv: float, rho: float, servers: int) -> float:
    """Whitt (1983) m-server linking equation; rho is capped at 1 (a saturated
    server emits at its service rhythm whatever comes in)."""
    one = [np.array([float(v)]) for v in (arrival_cv, service_cv, rho, servers)]
    return float(_qna(*one)[0])


def _qna(ca: np.ndarray, cs: np.ndarray, rho: np.ndarray, m: np.ndarray) -> np.ndarray:
    r2 = np.clip(rho, 0.0, 1.0) ** 2
    c2 = 1.0 + (1.0 - r2) * (ca**2 - 1.0) + r2 * (cs**2 - 1.0) / np.sqrt(np.maximum(m, 1.0))
    out: np.ndarray = np.sqrt(np.maximum(c2, 0.0))
    return out


def baseline_predict(name: str, raw: np.ndarray, upstream: Sequence[Sequence[int]]) -> np.ndarray:
    """Next-period arrival CV per stage; a source stage keeps its own arrival CV."""
    return baseline_predict_many(name, [(raw, upstream)])[0]


def baseline_predict_many(
    name: str, graphs: Sequence[tuple[np.ndarray, Sequence[Sequence[int]]]]
) -> list[np.ndarray]:
    """``baseline_predict`` for many pipelines at once, vectorised over all stages."""
    if not graphs:
        return []
    raw = np.concatenate([np.asarray(g, dtype=float).reshape(-1, len(FEATURES)) for g, _ in graphs])
    if name == "copy_upstream":
        source = raw[:, _ACV]
    elif name == "upstream_departure":
        source = raw[:, _DCV]
    elif name == "qna":
        source = _qna(raw[:, _ACV], raw[:, _SCV], raw[:, _UTIL], raw[:, _REPL])
    else:
        raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
    out = raw[:, _ACV].copy()
    single_dst, single_src = [], []
    offset = 0
    for _, upstream in graphs:
        for i, parents in enumerate(upstream):
            if len(parents) == 1:
                single_dst.append(offset + i)
                single_src.append(offset + parents[0])
            elif parents:
                # superposition (QNA): c^2 = sum_j (lambda_j / lambda) c_j^2
                idx = [offset + p for p in parents]
                lam = np.nan_to_num(raw[idx, _RATE], nan=0.0)
                c2 = source[idx] ** 2
                total = lam.sum()
                out[offset + i] = math.sqrt(
                    float(np.sum(lam * c2) / total) if total > 0 else float(np.mean(c2))
                )
        offset += len(upstream)
    out[single_dst] = source[single_src]
    sizes = np.cumsum([len(up) for _, up in graphs])[:-1]
    return np.split(out, sizes)
