"""M/M/c stage delay (Eq. 1, Erlang C) and the smallest replica count for a budget.

A pipeline stage with ``c`` replicas, Poisson arrivals at ``lambda`` req/s and
exponential service at ``mu`` req/s per replica is an M/M/c queue.  Its mean
time in stage (Kleinrock, *Queueing Systems* Vol. 1, Sec. 3.5; Gross & Harris,
*Fundamentals of Queueing Theory*, Sec. 2.3) is

    a   = lambda / mu                      offered load (Erlangs)
    rho = a / c                            per-replica utilisation, must be < 1
    C(c, a) = P(wait > 0)                  Erlang C
    W_q = C(c, a) / (c*mu - lambda)        mean wait in queue           (Eq. 1)
    W   = W_q + 1/mu                       mean time in stage

Note the units: ``C / (c*mu - lambda)`` is already a time.  A public
reconstruction multiplied it by ``lambda`` (that is L_q, a number of requests,
not W_q), which inflates the delay by a factor of the arrival rate; the tests
pin the correct value.

Erlang C is computed from the Erlang-B recursion
``B(0) = 1, B(k) = a*B(k-1) / (k + a*B(k-1))`` and
``C = B / (1 - rho*(1 - B))`` (the standard relation between Erlang's loss
and delay formulas, e.g. in Gross & Harris), which never forms
``a**c`` or ``c!`` and therefore stays accurate for thousands of replicas.
"""

from __future__ import annotations

import math

__all__ = [
    "erlang_b",
    "erlang_c",
    "min_replicas_for",
    "mmc_queue_wait",
    "mmc_stage_delay",
]


def _check_rates(arrival_rate: float, service_rate: float) -> None:
    if not math.isfinite(arrival_rate) or arrival_rate < 0:
        raise ValueError(f"arrival_rate must be a finite number >= 0, got {arrival_rate!r}")
    if not math.isfinite(service_rate) or service_rate <= 0:
        raise ValueError(f"service_rate must be a finite number > 0, got {service_rate!r}")


def _check_servers(servers: int) -> None:
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < 1:
        raise ValueError(f"replicas must be an int >= 1, got {servers!r}")


def erlang_b(servers: int, offered_load: float) -> float:
    """Blocking probability B(c, a) of an M/M/c/c system (Erlang B recursion)."""
    _check_servers(servers)
    if not math.isfinite(offered_load) or offered_load < 0:
        raise ValueError(f"offered_load must be a finite number >= 0, got {offered_load!r}")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    return b


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits, C(c, a); 1.0 when the queue is unstable."""
    b = erlang_b(servers, offered_load)
    rho = offered_load / servers
    if rho >= 1.0:
        return 1.0
    return b / (1.0 - rho * (1.0 - b))


def mmc_queue_wait(arrival_rate: float, service_rate: float, replicas: int) -> float:
    """Mean wait before service, W_q = C(c, a) / (c*mu - lambda) seconds (Eq. 1)."""
    _check_rates(arrival_rate, service_rate)
    _check_servers(replicas)
    if arrival_rate == 0.0:
        return 0.0
    capacity = replicas * service_rate
    if arrival_rate >= capacity:
        return math.inf
    return erlang_c(replicas, arrival_rate / service_rate) / (capacity - arrival_rate)


def mmc_stage_delay(arrival_rate: float, service_rate: float, replicas: int) -> float:
    """Expected time in stage W = W_q + 1/mu seconds (Eq. 1); ``math.inf`` if rho >= 1.

    With no traffic a request never queues, so the delay is the bare service
    time 1/mu; that is what a lone probe request would see.
    """
    return mmc_queue_wait(arrival_rate, service_rate, replicas) + 1.0 / service_rate


def min_replicas_for(
    arrival_rate: float,
    service_rate: float,
    budget_s: float,
    max_replicas: int | None = None,
) -> int | None:
    """Smallest c with ``mmc_stage_delay(lambda, mu, c) <= budget_s``, or ``None``.

    ``None`` is an answer, not an error: it means no replica count can meet
    the budget, either because the budget is not above the bare service time
    1/mu (queueing can only add to it, so more replicas never help) or because
    the count needed exceeds ``max_replicas``.  The caller decides what to do
    (the replica corrector then asks for ``max_replicas`` and says why).
    Malformed input (negative or non-finite rates, ``mu <= 0``, a budget that
    is not a positive finite number, ``max_replicas < 1``) raises ValueError.

    The delay falls monotonically in c, so the search starts at the first
    stable count ``floor(a) + 1`` and extends the Erlang-B recursion one
    server at a time: O(answer) work in total.
    """
    _check_rates(arrival_rate, service_rate)
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be a finite number > 0, got {budget_s!r}")
    if max_replicas is not None:
        _check_servers(max_replicas)
    service_time = 1.0 / service_rate
    if arrival_rate == 0.0:
        return 1 if budget_s >= service_time else None
    if budget_s <= service_time:
        return None
    wait_budget = budget_s - service_time
    a = arrival_rate / service_rate
    first_stable = math.floor(a) + 1
    limit = math.inf if max_replicas is None else max_replicas
    if first_stable > limit:
        return None
    b = 1.0
    for k in range(1, first_stable):  # unstable counts: only carry the recursion
        b = a * b / (k + a * b)
    c = first_stable
    while c <= limit:
        b = a * b / (c + a * b)
        # W_q = C / (c*mu - lambda) with C = B / (1 - rho*(1 - B)), rho = a/c
        if b / ((1.0 - a / c * (1.0 - b)) * (c * service_rate - arrival_rate)) <= wait_budget:
            return c
        c += 1
    return None
