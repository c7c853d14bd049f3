"""Optional batched assignment: entropic optimal transport (Sinkhorn), then rounding.

Placing a batch one job at a time lets the first jobs take the best GPU
types and leaves the rest with what is left.  Sinkhorn spreads the batch
over capacities at once: it finds the transport plan P minimising

    <P, C> - epsilon * H(P)   s.t.  P 1 = a (each job: mass 1),  P^T 1 = b (capacities)

(Cuturi 2013, "Sinkhorn Distances", Eq. 2) by alternately rescaling rows
and columns of K = exp(-C / epsilon) (Sinkhorn & Knopp 1967).  We iterate
on log potentials, f <- log a - LSE_j(log K + g), g <- log b - LSE_i(log K + f),
which stays finite for small epsilon (Peyre & Cuturi 2019, *Computational
Optimal Transport*, Sec. 4.4).

When capacity exceeds the batch, one slack row of zero cost absorbs the
unused capacity, so the problem is balanced and every job row still sums
to 1 (with unit capacities and as many slots as jobs, P is doubly
stochastic).  C is rescaled to [0, 1] first, so epsilon is relative to the
spread of the costs and one value works for milliseconds and for hours.

Rounding: entries in decreasing order of P; a job takes a GPU type while it
has capacity left.  Capacities hold by construction, and since total
capacity >= jobs every job is placed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SinkhornResult:
    plan: np.ndarray         # jobs x gpu types; every row sums to 1 (up to tol)
    assignment: list[int]    # per job, the column it was rounded to
    iterations: int
    converged: bool
    max_row_error: float     # max |row sum - 1| of ``plan``
    max_col_error: float     # max |column sum - capacity| of the balanced plan


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(x))) along ``axis`` without overflow."""
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def sinkhorn(cost: np.ndarray, capacities: np.ndarray | None = None, epsilon: float = 0.05,
             max_iter: int = 2000, tol: float = 1e-9) -> SinkhornResult:
    """Transport plan and rounded assignment of ``cost.shape[0]`` jobs to columns.

    ``capacities``: slots per column (None: unlimited, i.e. ``n`` each).
    Raises ValueError when the capacities cannot hold the batch."""
    c = np.asarray(cost, dtype=float)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0 or not np.all(np.isfinite(c)):
        raise ValueError("cost must be a finite, non-empty 2-D matrix")
    if epsilon <= 0:
        raise ValueError("epsilon must be > 0")
    n, m = c.shape
    cap = np.full(m, float(n)) if capacities is None else np.asarray(capacities, dtype=float)
    if cap.shape != (m,) or np.any(cap < 0):
        raise ValueError("capacities must be one non-negative number per column")
    if cap.sum() < n:
        raise ValueError(f"total capacity {cap.sum():g} < {n} jobs")
    live = cap > 0  # a column without capacity takes no mass: leave it out of the iteration
    spread = float(c.max() - c.min())
    cn = (c - c.min()) / spread if spread > 0 else np.zeros_like(c)
    slack = cap.sum() - n
    rows = np.vstack([cn[:, live], np.zeros((1, int(live.sum())))]) if slack > 0 \
        else cn[:, live]
    log_a = np.log(np.r_[np.ones(n), [slack]] if slack > 0 else np.ones(n))
    log_b = np.log(cap[live])
    log_k = -rows / epsilon
    f, g = np.zeros(rows.shape[0]), np.zeros(rows.shape[1])
    converged, it, row_err = False, 0, np.inf
    for it in range(1, max_iter + 1):  # noqa: B007 (read after the loop: iterations run)
        f = log_a - _lse(log_k + g[None, :], axis=1)
        g = log_b - _lse(log_k + f[:, None], axis=0)  # columns now exact
        row_sums = np.exp(_lse(log_k + f[:, None] + g[None, :], axis=1))
        row_err = float(np.max(np.abs(row_sums - np.exp(log_a))))
        if row_err < tol:
            converged = True
            break
    p_live = np.exp(log_k + f[:, None] + g[None, :])
    col_err = float(np.max(np.abs(p_live.sum(axis=0) - cap[live])))
    plan = np.zeros((n, m))
    plan[:, live] = p_live[:n]
    return SinkhornResult(plan, round_plan(plan, cap), it, converged,
                          float(np.max(np.abs(plan.sum(axis=1) - 1.0))), col_err)


def round_plan(plan: np.ndarray, capacities: np.ndarray) -> list[int]:
    """Greedy rounding: largest entries first, within capacity; every job placed."""
    n, _m = plan.shape
    left = np.floor(np.asarray(capacities, dtype=float) + 1e-9).astype(int)
    if left.sum() < n:
        raise ValueError(f"whole slots {left.sum()} < {n} jobs")
    out = [-1] * n
    placed = 0
    for flat in np.argsort(-plan, axis=None, kind="stable"):
        i, j = divmod(int(flat), plan.shape[1])
        if out[i] < 0 and left[j] > 0:
            out[i], left[j] = j, left[j] - 1
            placed += 1
            if placed == n:
                break
    return out
