"""``run``: one scheduler on one workload in the simpy model, as a ``RunResult``.

Randomness comes from one seed split four ways (``numpy.random.SeedSequence``):
per-request draws (service jitter, decoder tokens, the gossip client's entry
node) are made up front, so request i costs the same under both schedulers;
cold-load jitter, gossip partner choice and the client's re-picks after a
failure have streams of their own, so one scheduler's extra loads never shift
another stream.  Same inputs, same seed: the same result, bit for bit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import simpy

from benchmark.results import RunResult
from benchmark.studies.sched.central import Coordinator
from benchmark.studies.sched.cluster import Cluster
from benchmark.studies.sched.config import SchedConfig
from benchmark.studies.sched.decide import ACTIONS
from benchmark.studies.sched.models import ModelSpec, resolve_models
from benchmark.studies.sched.peer import GossipScheduler
from benchmark.studies.sched.recovery import recovery_time

__all__ = ["SCHEDULERS", "run"]

SCHEDULERS = ("central", "gossip")


def _check_arrivals(arrivals: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict]:
    try:
        times = np.asarray(arrivals.times_s, dtype=float)
        target = np.asarray(arrivals.target)
        targets = tuple(str(t) for t in arrivals.targets)
        meta = dict(getattr(arrivals, "meta", {}) or {})
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError("arrivals must have times_s, target, targets (and meta), as "
                         f"benchmark.workloads.Arrivals: {e}") from None
    if times.ndim != 1 or target.shape != times.shape:
        raise ValueError("arrivals.times_s and arrivals.target must be 1-D and equally long")
    if len(times) and (not np.isfinite(times).all() or times.min() < 0):
        raise ValueError("arrival times must be finite and >= 0")
    if len(times) > 1 and (np.diff(times) < 0).any():
        raise ValueError("arrival times must be sorted")
    if len(target) and (not np.issubdtype(target.dtype, np.integer)
                        or target.min() < 0 or target.max() >= len(targets)):
        raise ValueError(f"arrivals.target must index arrivals.targets (0..{len(targets) - 1})")
    return times, target.astype(np.int64), targets, meta


def _memory(nodes: int, memory_mib: float | Sequence[float]) -> list[float]:
    if isinstance(nodes, bool) or not isinstance(nodes, int | np.integer) or nodes < 1:
        raise ValueError(f"nodes must be an integer >= 1, got {nodes!r}")
    mem = ([float(memory_mib)] * int(nodes) if isinstance(memory_mib, int | float)
           else [float(m) for m in memory_mib])
    if len(mem) != nodes:
        raise ValueError(f"memory_mib has {len(mem)} entries for {nodes} nodes")
    if any(not (math.isfinite(m) and m > 0) for m in mem):
        raise ValueError("every node's memory_mib must be > 0")
    return mem


def run(arrivals: Any, scheduler: str = "central", nodes: int = 3,
        models: Sequence[ModelSpec] | Mapping[str, ModelSpec] | None = None,
        slo_s: float = 1.0, fail_at: float | None = None, seed: int = 0,
        memory_mib: float | Sequence[float] = 768.0, fail_node: str | None = None,
        config: SchedConfig | None = None) -> RunResult:
    """Simulate ``scheduler`` ("central" | "gossip") serving ``arrivals`` on ``nodes`` nodes.

    ``fail_at`` kills ``fail_node`` (default ``node-0``, the node the
    coordinator starts on) at that time; ``recovery_s`` then holds the
    recovery time (``inf`` if the run ended first).
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    cfg = config or SchedConfig()
    if not isinstance(cfg, SchedConfig):
        raise TypeError("config must be a SchedConfig")
    times, target, targets, meta = _check_arrivals(arrivals)
    mem = _memory(nodes, memory_mib)
    specs = resolve_models(targets, models)
    too_big = [s.name for s in specs if s.size_mib > max(mem)]
    if too_big:
        raise ValueError(f"models {too_big} do not fit in any node's memory ({max(mem)} MiB)")
    if not (isinstance(slo_s, int | float) and math.isfinite(slo_s) and slo_s > 0):
        raise ValueError(f"slo_s must be > 0, got {slo_s!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    victim = _victim(fail_at, fail_node, nodes, times, meta)

    wall0, started = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    env, cluster, sched = _simulate(scheduler, cfg, specs, mem, nodes, times, target, seed,
                                    fail_at, victim)
    latency, ttft, ok, actions, unfinished = _outcomes(cluster, len(times), cfg)
    recovery: list[float] = []
    if fail_at is not None:
        recovery.append(recovery_time(
            float(fail_at), times, latency, ok, float(slo_s), cfg.window_s,
            [s.t_s for s in cluster.samples], [s.available for s in cluster.samples],
            cluster.lost_models, [specs[int(t)].name for t in target]))
    run_info = {"unfinished": unfinished, "sim_end_s": float(env.now),
                "wall_s": time.perf_counter() - wall0}
    extra = _extra(cluster, sched, cfg, specs, mem, nodes, seed, fail_at, victim, run_info)
    workload = {k: meta[k] for k in ("name", "seed", "duration_s", "kind", "parameters")
                if k in meta}
    sha = getattr(arrivals, "sha256", None)
    workload["sha256"] = sha() if callable(sha) else str(meta.get("sha256", ""))
    return RunResult(system=scheduler, mode="sim", workload=workload, slo_s=float(slo_s),
                     arrival_s=times, latency_s=latency, ok=ok, ttft_s=ttft,
                     timeline=cluster.timeline, actions=actions, recovery_s=recovery,
                     start_time=started, end_time=datetime.now(UTC).isoformat(timespec="seconds"),
                     extra=extra)


def _victim(fail_at: float | None, fail_node: str | None, nodes: int, times: np.ndarray,
            meta: Mapping[str, Any]) -> str:
    """The node to fail (checked against the run when there is a failure)."""
    victim = fail_node or "node-0"
    if fail_at is not None:
        if not (isinstance(fail_at, int | float) and math.isfinite(fail_at) and fail_at >= 0):
            raise ValueError(f"fail_at must be a time >= 0, got {fail_at!r}")
        if nodes < 2:
            raise ValueError("failure injection needs at least 2 nodes")
        if victim not in [f"node-{i}" for i in range(nodes)]:
            raise ValueError(f"fail_node {victim!r} is not one of node-0..node-{nodes - 1}")
        end = float(meta.get("duration_s") or (times[-1] if len(times) else 0.0))
        if fail_at >= end:
            raise ValueError(f"fail_at {fail_at} s is not before the workload's end ({end} s)")
    elif fail_node is not None:
        raise ValueError("fail_node given without fail_at")
    return victim


def _simulate(scheduler: str, cfg: SchedConfig, specs: list[ModelSpec], mem: list[float],
              nodes: int, times: np.ndarray, target: np.ndarray, seed: int,
              fail_at: float | None,
              victim: str) -> tuple[simpy.Environment, Cluster, Coordinator | GossipScheduler]:
    """Draw the requests' sizes (seeded), build the cluster and its scheduler, run to the end
    (every request done and the failure, if any, past) or to a generous limit."""
    req_ss, load_ss, gossip_ss, client_ss = np.random.SeedSequence(int(seed)).spawn(4)
    rr = np.random.default_rng(req_ss)
    n = len(times)
    sig = cfg.serve_sigma
    factors = np.exp(rr.normal(-sig * sig / 2, sig, n)) if sig > 0 else np.ones(n)
    mean_tokens = np.array([s.tokens for s in specs], dtype=float)[target] if n else np.zeros(0)
    tokens = np.maximum(1, rr.poisson(np.maximum(mean_tokens, 1.0)))
    entry = rr.integers(0, nodes, n)

    env = simpy.Environment()
    cluster = Cluster(env, specs, mem, cfg, np.random.default_rng(load_ss))
    if cfg.prewarm:
        cluster.prewarm(np.bincount(target, minlength=len(specs)).tolist())
    sched: Coordinator | GossipScheduler
    if scheduler == "central":
        sched = Coordinator(cluster, "node-0")
    else:
        sched = GossipScheduler(cluster, entry, random.Random(int(gossip_ss.generate_state(1)[0])),
                                np.random.default_rng(client_ss))
    cluster.scheduler = sched
    sched.start()
    env.process(cluster.client(times, target, factors, tokens))
    env.process(cluster.sampler())
    finished = cluster.all_done
    if fail_at is not None:  # the failure happens even after the last request is done
        finished = env.all_of([finished, env.process(cluster.fail_node_at(float(fail_at),
                                                                            victim))])
    limit = max(float(times[-1]) if n else 0.0, float(fail_at or 0.0)) + max(
        600.0, 10 * cfg.timeout_s)
    env.run(until=env.any_of([finished, env.timeout(limit)]))
    cluster.sample()
    return env, cluster, sched


def _outcomes(cluster: Cluster, n: int, cfg: SchedConfig) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, dict[str, int], int]:
    """Per request its latency, TTFT and success (within the timeout); actions; unfinished."""
    latency = np.full(n, math.nan)
    ttft = np.full(n, math.nan)
    ok = np.zeros(n, dtype=bool)
    actions = dict.fromkeys(ACTIONS, 0)
    unfinished = 0
    for job in cluster.jobs:
        if job.action:
            actions[job.action] += 1
        done = not job.failed and math.isfinite(job.end_s)
        unfinished += not job.failed and not done
        lat = job.end_s - job.arrival_s
        if done and lat <= cfg.timeout_s:
            ok[job.rid], latency[job.rid] = True, lat
            ttft[job.rid] = job.ttft_s - job.arrival_s
    return latency, ttft, ok, actions, unfinished


def _extra(cluster: Cluster, sched: Coordinator | GossipScheduler, cfg: SchedConfig,
           specs: list[ModelSpec], mem: list[float], nodes: int, seed: int,
           fail_at: float | None, victim: str, run_info: dict[str, Any]) -> dict[str, Any]:
    """What the run saw beyond latencies: loads, evictions, the scheduler's own counters."""
    extra: dict[str, Any] = {
        "nodes": nodes, "memory_mib": mem, "seed": int(seed),
        "models": {s.name: {"size_mib": s.size_mib, "load_s": s.load_s,
                            "mean_serve_s": s.mean_serve_s, "kind": s.kind} for s in specs},
        "loads": sum(nd.loads for nd in cluster.nodes.values()),
        "evictions": sum(nd.evictions for nd in cluster.nodes.values()),
        "timeouts": int(sum(1 for j in cluster.jobs if not j.failed and math.isfinite(j.end_s)
                            and j.end_s - j.arrival_s > cfg.timeout_s)),
        **run_info,
    }
    if fail_at is not None:
        extra.update(fail_at_s=float(fail_at), fail_node=victim,
                     failed_at_crash=cluster.failed_at_crash,
                     lost_models=list(cluster.lost_models))
    if isinstance(sched, Coordinator):
        extra.update(coordinator_downtime=sched.downtime, redispatched=sched.redispatched,
                     decisions=sched.decisions)
    else:
        extra.update(gossip_messages=sched.messages, gossip_entries_sent=sched.entries_sent,
                     view_age_s=_stats(sched.ages),
                     view_backlog_error_s=_stats([abs(x) for x in sched.backlog_err]),
                     view_backlog_bias_s=float(np.mean(sched.backlog_err))
                     if sched.backlog_err else math.nan,
                     detection_s={v: {k: t - float(fail_at or 0) for k, t in d.items()}
                                  for v, d in sched.detected_dead.items()},
                     client_gave_up_on=sorted(sched.client_dead))
    return extra


def _stats(xs: Sequence[float]) -> dict[str, float]:
    if not len(xs):
        return {"n": 0}
    a = np.asarray(xs, dtype=float)
    return {"n": len(a), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}
