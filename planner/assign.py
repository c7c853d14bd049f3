"""Phases 2 and 3: which models live on which GPUs, and how GPUs form servers.

The GPUs are numbered ``0..N-1`` and cut into servers of ``--gpus-per-server``
consecutive GPUs (the last one may be smaller).  A model needing ``k`` GPUs
gets ``k`` consecutive GPUs of one server; it never changes afterwards, which
is why a static plan makes zero model switches.

Every strategy works in the same three steps:

1. **replica counts** (shared): each model once, then the spare GPUs go one
   instance at a time to the model whose instances carry the most estimated
   work (``work_s / instances``) -- the bottleneck -- as long as all
   instances still pack onto the servers.  GSwarm may hold a share of the
   spare GPUs back (``GSwarmVariant.locality_share``) for bundle copies;
2. **placement** of those instances onto servers (the strategy):

   * ``gswarm`` (gswarm.py) -- workflow *bundles* first: the workflow with the most
     requests (or work) not yet completable on any server gets the server that
     is not crowded by it (no model's traffic per instance above
     ``crowding`` x its fair share), then needs the fewest new GPUs (affinity:
     shared models are reused), then carries the least load; then further
     copies of bundles, taking held-back GPUs for light models; then each
     remaining instance goes to the server it has most affinity with
     (co-occurrence + data edges, see ``analysis``);
   * ``random`` -- each instance (biggest first) on a uniformly drawn server
     with room (seeded);
   * ``round-robin`` -- instances in usage order dealt to servers in turn;

   every placement keeps "the remaining instances still fit" as an invariant
   (first fit decreasing), relaxed to "every model still fits", so no model
   is ever left without an instance;
3. **fill and layout** (shared): an instance that found no room is dropped and
   the free GPUs are filled with replicas of the busiest models that fit; then
   each server lays its instances out largest first on consecutive GPUs.

``choose.choose_gswarm`` runs GSwarm with a few ``GSwarmVariant`` settings and
keeps the best simulated plan; ``make_plan`` alone builds one plan.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .analysis import Analysis
from .board import Board, packable, server_caps
from .gswarm import GSwarmVariant, affinity_to, place_gswarm
from .spec import PlanInputError, SystemConfig

__all__ = [
    "STRATEGIES",
    "GSwarmVariant",
    "Instance",
    "Plan",
    "check_capacity",
    "make_plan",
    "replica_counts",
    "server_caps",
]

STRATEGIES = ("gswarm", "random", "round-robin")


@dataclass(frozen=True)
class Instance:
    """One copy of a model, pinned to consecutive GPUs of one server."""

    model: str
    server: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    strategy: str
    gpu_count: int
    gpus_per_server: int
    instances: tuple[Instance, ...]
    replica_target: dict[str, int]
    dropped: tuple[str, ...] = ()
    variant: str = ""

    @property
    def server_count(self) -> int:
        return len(server_caps(self.gpu_count, self.gpus_per_server))

    def server_of_gpu(self, gpu: int) -> int:
        return gpu // self.gpus_per_server

    def server_gpus(self, server: int) -> list[int]:
        lo = server * self.gpus_per_server
        return list(range(lo, min(self.gpu_count, lo + self.gpus_per_server)))

    def models_on(self, server: int) -> set[str]:
        return {i.model for i in self.instances if i.server == server}

    def gpu_models(self, gpu: int) -> list[str]:
        return sorted({i.model for i in self.instances if gpu in i.gpus})

    def instances_of(self, model: str) -> list[Instance]:
        return [i for i in self.instances if i.model == model]


def check_capacity(config: SystemConfig, gpu_count: int, gpus_per_server: int) -> None:
    """Reject a GPU/server shape that cannot host every planned model once."""
    if gpu_count < 1:
        raise PlanInputError("--gpus", "", f"must be >= 1, got {gpu_count}")
    if gpus_per_server < 1:
        raise PlanInputError("--gpus-per-server", "", f"must be >= 1, got {gpus_per_server}")
    caps = server_caps(gpu_count, gpus_per_server)
    for m in config.planned_models:
        need = config.models[m].gpus_required
        if need > max(caps):
            raise PlanInputError(
                config.source,
                f"models.{m}.gpus_required",
                f"{need} consecutive GPUs on one server, but servers have at most {max(caps)} "
                f"(--gpus {gpu_count} --gpus-per-server {gpus_per_server})",
            )
    sizes = [config.models[m].gpus_required for m in config.planned_models]
    if sum(sizes) > gpu_count or not packable(sizes, caps):
        raise PlanInputError(
            "--gpus",
            "",
            f"{gpu_count} GPUs in servers of {gpus_per_server} cannot host each of the "
            f"{len(sizes)} models once (they need {sum(sizes)} GPUs)",
        )


def replica_counts(
    config: SystemConfig,
    analysis: Analysis,
    gpu_count: int,
    gpus_per_server: int,
    held_back: int = 0,
) -> dict[str, int]:
    """Step 1: one instance per model, spare GPUs (less ``held_back``) to the busiest instances.

    An extra instance is only added if all instances still pack onto the
    servers (first fit decreasing), so every strategy can realise the counts.
    """
    models = config.planned_models
    gpus = {m: config.models[m].gpus_required for m in models}
    caps = server_caps(gpu_count, gpus_per_server)
    counts = {m: 1 for m in models}
    spare = gpu_count - sum(gpus.values()) - held_back
    skipped: set[str] = set()
    while spare > 0:
        fits = [
            m
            for m in models
            if gpus[m] <= spare and analysis.model_work_s[m] > 0 and m not in skipped
        ]
        if not fits:
            break
        best = max(fits, key=lambda m: (analysis.model_work_s[m] / counts[m], -models.index(m)))
        sizes = [gpus[m] for m in models for _ in range(counts[m] + (m == best))]
        if not packable(sizes, caps):
            skipped.add(best)
            continue
        counts[best] += 1
        spare -= gpus[best]
    return counts


def _place_random(board: Board, rng: np.random.Generator) -> None:
    """Uniform server choice; instances biggest first (random among equal sizes)."""
    models = sorted(board.pool)
    firsts = [models[i] for i in rng.permutation(len(models))]
    extra = [m for m in models for _ in range(board.pool[m] - 1)]
    extra = [extra[i] for i in rng.permutation(len(extra))]
    for m in sorted(firsts + extra, key=lambda m: -board.gpus[m]):  # stable sort
        options = board.options(m)
        if options:
            board.put(m, options[int(rng.integers(len(options)))])


def _place_round_robin(board: Board, analysis: Analysis, order: list[str]) -> None:
    """Instances in usage order (every model once, then the replicas), servers in turn."""
    by_usage = sorted(order, key=lambda m: (-analysis.model_usage.get(m, 0), order.index(m)))
    sequence: list[str] = []
    left = Counter(board.pool)
    while any(n > 0 for n in left.values()):
        for m in by_usage:
            if left[m] > 0:
                sequence.append(m)
                left[m] -= 1
    nxt = 0
    n = len(board.free)
    for m in sequence:
        options = set(board.options(m))
        for off in range(n):
            s = (nxt + off) % n
            if s in options:
                board.put(m, s)
                nxt = (s + 1) % n
                break


def _fill(board: Board, analysis: Analysis, order: list[str], use_affinity: bool) -> None:
    """Spare GPUs get replicas of the model with the most work per instance that fits."""
    for s in board.servers:
        while board.free[s] > 0:
            fits = [m for m in order if board.gpus[m] <= board.free[s]]
            if not fits:
                break

            here = board.models(s)

            def key(m: str, here: set[str] = here) -> tuple[float, int, int]:
                aff = affinity_to(analysis, m, here) if use_affinity else 0
                return (
                    analysis.model_work_s.get(m, 0.0) / max(1, board.total[m]),
                    aff,
                    -order.index(m),
                )

            board.put(max(fits, key=key), s)


def _layout(board: Board, gpus_per_server: int) -> list[Instance]:
    out: list[Instance] = []
    for s in board.servers:
        gpu = s * gpus_per_server
        for m in sorted(board.placed[s].elements(), key=lambda m: (-board.gpus[m], m)):
            k = board.gpus[m]
            out.append(Instance(m, s, tuple(range(gpu, gpu + k))))
            gpu += k
    return out


def make_plan(
    config: SystemConfig,
    analysis: Analysis,
    gpu_count: int,
    gpus_per_server: int,
    strategy: str = "gswarm",
    seed: int = 0,
    variant: GSwarmVariant | None = None,
) -> Plan:
    """Assign every planned model to GPUs with ``strategy`` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    check_capacity(config, gpu_count, gpus_per_server)
    variant = variant or GSwarmVariant()
    order = config.planned_models
    gpus = {m: config.models[m].gpus_required for m in order}
    spare = gpu_count - sum(gpus.values())
    held = int(spare * variant.locality_share) if strategy == "gswarm" else 0
    target = replica_counts(config, analysis, gpu_count, gpus_per_server, held)
    per_instance = {m: analysis.model_work_s.get(m, 0.0) / target[m] for m in order}
    board = Board(server_caps(gpu_count, gpus_per_server), gpus, per_instance, target)
    if strategy == "gswarm":
        board.budget = gpu_count - sum(gpus[m] * n for m, n in target.items())
        place_gswarm(board, analysis, variant, per_instance)
    elif strategy == "random":
        _place_random(board, np.random.default_rng([seed, 1]))
    else:
        _place_round_robin(board, analysis, order)
    dropped = tuple(sorted(board.pool.elements()))
    _fill(board, analysis, order, use_affinity=strategy == "gswarm")
    missing = [m for m in order if board.total[m] == 0]
    assert not missing, f"coverage invariant broken: {missing}"
    label = variant.label if strategy == "gswarm" else ""
    return Plan(
        strategy,
        gpu_count,
        gpus_per_server,
        tuple(_layout(board, gpus_per_server)),
        target,
        dropped,
        label,
    )
