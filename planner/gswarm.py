"""GSwarm's placement (assign.py, step 2): workflow bundles first, then the rest by affinity.

The workflow with the most requests (or work) not yet completable on any server gets the
server that is not crowded by it, then needs the fewest new GPUs, then carries the least
load; then further copies of bundles; then each remaining instance goes to the server it
has most affinity with.  Each step is a function of the board, so it can be read alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import Analysis
from .board import Board


@dataclass(frozen=True)
class GSwarmVariant:
    """Knobs of the GSwarm placement (``choose`` simulates several and keeps the best).

    * ``order`` -- which workflows get their bundle first: ``"frequency"``
      (requests: most server efficiency per GPU) or ``"work"`` (seconds of
      work: the heaviest traffic local first);
    * ``crowding`` -- a server counts as crowded for a workflow when, after
      taking it, some model there would carry more than ``crowding`` times its
      fair share per instance (``work / replicas``); crowded servers are
      chosen last.  ``inf`` ignores load and follows affinity alone;
    * ``locality_share`` -- the share of spare GPUs held back from load-driven
      replicas so that bundles can be copied onto more servers (copies may
      then add instances of light models beyond their replica count).
    """

    order: str = "frequency"
    crowding: float = 1.5
    locality_share: float = 0.5

    @property
    def label(self) -> str:
        return (
            f"order={self.order} crowding={self.crowding:g} locality_share={self.locality_share:g}"
        )


def affinity_to(analysis: Analysis, m: str, models: set[str]) -> int:
    return sum(analysis.affinity(m, x) for x in models if x != m)


def _local_servers(board: Board, models: frozenset[str]) -> list[int]:
    return [s for s in board.servers if models <= board.models(s)]


def _traffic(board: Board, analysis: Analysis, bundles: list[str]) -> list[dict[str, float]]:
    """Expected seconds per model on each server from the workflows it completes."""
    out: list[dict[str, float]] = [{} for _ in board.servers]
    for w in bundles:
        hosts = _local_servers(board, analysis.workflow_models[w])
        for s in hosts:
            for m, sec in analysis.workflow_model_work_s[w].items():
                out[s][m] = out[s].get(m, 0.0) + sec / len(hosts)
    return out


@dataclass(frozen=True)
class _Bundles:
    """What the bundle phase works with: the workflows that fit on one server, their
    weights (by ``variant.order``) and each model's fair share of work per instance."""

    analysis: Analysis
    variant: GSwarmVariant
    fair: dict[str, float]
    workflows: list[str]
    weight: dict[str, float]


def _crowded(b: _Bundles, board: Board, traffic: list[dict[str, float]], s: int, w: str,
             missing: list[str], hosts: int) -> bool:
    """Would server ``s`` carry more than ``crowding`` x the fair share of some model of
    ``w`` per instance once it hosts one more copy of ``w``?"""
    if b.variant.crowding == float("inf"):
        return False
    for m, sec in b.analysis.workflow_model_work_s[w].items():
        count = board.placed[s][m] + (1 if m in missing else 0)
        load = traffic[s].get(m, 0.0) + sec / (hosts + 1)
        if b.fair[m] > 0 and load / count > b.variant.crowding * b.fair[m] + 1e-9:
            return True
    return False


def _best_copy(b: _Bundles, board: Board) -> tuple[int, list[str]] | None:
    """The next bundle copy: (server, models missing there), or None when none fits."""
    traffic = _traffic(board, b.analysis, b.workflows)
    best: tuple[tuple[object, ...], int, list[str]] | None = None
    for w in b.workflows:
        mw = b.analysis.workflow_models[w]
        local = len(_local_servers(board, mw))
        for s in board.servers:
            missing = sorted(mw - board.models(s))
            if not missing:
                continue
            borrow = sum(board.gpus[m] for m in missing if board.pool[m] < 1)
            pooled = [m for m in missing if board.pool[m] > 0]
            if borrow > board.budget or not board.keeps_room(s, pooled, extra_gpus=borrow):
                continue
            need = sum(board.gpus[m] for m in missing)
            key = (
                local > 0,
                -b.weight[w] / (1 + local),
                _crowded(b, board, traffic, s, w, missing, local),
                need,
                board.load[s],
                s,
                w,
            )
            if best is None or key < best[0]:
                best = (key, s, missing)
    return None if best is None else (best[1], best[2])


def _place_rest(board: Board, analysis: Analysis) -> None:
    """The rest of the replica target, biggest first, next to their partners."""
    order = sorted(
        board.pool, key=lambda m: (-board.gpus[m], board.total[m] > 0, -board.work[m], m)
    )
    for m in order:
        while board.pool[m] > 0:
            options = board.options(m)
            if not options:
                break
            board.put(
                m,
                min(
                    options,
                    key=lambda s: (
                        -affinity_to(analysis, m, board.models(s)),
                        board.placed[s][m],
                        board.load[s],
                        s,
                    ),
                ),
            )


def place_gswarm(
    board: Board, analysis: Analysis, variant: GSwarmVariant, fair: dict[str, float]
) -> None:
    biggest = max(board.free)
    workflows = [
        w
        for w, f in analysis.workflow_frequency.items()
        if f > 0 and sum(board.gpus[m] for m in analysis.workflow_models[w]) <= biggest
    ]
    weight = {
        w: float(analysis.workflow_frequency[w])
        if variant.order == "frequency"
        else sum(analysis.workflow_model_work_s[w].values())
        for w in workflows
    }
    bundles = _Bundles(analysis, variant, fair, workflows, weight)
    while (copy := _best_copy(bundles, board)) is not None:  # first copies, then more
        s, missing = copy
        for m in missing:
            board.put(m, s)
    _place_rest(board, analysis)
