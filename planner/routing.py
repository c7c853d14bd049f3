"""Phase 4: runtime routing on a fixed plan -- finish a workflow inside one server if possible.

The router never loads or unloads a model (the plan is static); it only picks
which instance of a model runs a node.  It is a pure decision over the plan
and a ``backlog(instance) -> seconds`` view the simulator supplies, so the
same code routes every strategy's plan (GSwarm, random, round-robin), and the
comparison measures placement alone.

* On arrival, a request whose workflow's models are all hosted by some server
  ("can complete locally", the seed's ``required_models <= server.models``) is
  *pinned* to the least backlogged such server; all its nodes run there.
* A request no server can complete is routed node by node: a node goes where
  its parents' outputs already are (fewest cross-server inputs), then to the
  least backlogged instance; a root node goes to the server hosting most of
  the workflow's models.
* Locality is a preference, not a prison: a node *spills* to another server
  when the local instance's backlog exceeds the best other instance's
  (plus the transfers it causes) by more than ``spill_factor`` times the
  node's own estimated time; the request is then routed node by node.
  ``spill_factor = inf`` is the seed's strict behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .assign import Plan

__all__ = ["Router"]

Backlog = Callable[[int], float]


class Router:
    """Instance choice for one plan; instances are indices into ``plan.instances``."""

    def __init__(self, plan: Plan, spill_factor: float = 2.0) -> None:
        if not spill_factor >= 0:
            raise ValueError(f"spill_factor must be >= 0, got {spill_factor!r}")
        self.plan = plan
        self.spill_factor = spill_factor
        self.server_of = [inst.server for inst in plan.instances]
        self.by_model: dict[str, list[int]] = {}
        for idx, inst in enumerate(plan.instances):
            self.by_model.setdefault(inst.model, []).append(idx)
        self.server_models = [plan.models_on(s) for s in range(plan.server_count)]

    def local_servers(self, models: Iterable[str]) -> list[int]:
        """Servers hosting every one of ``models``."""
        need = set(models)
        return [s for s, have in enumerate(self.server_models) if need <= have]

    def pin(self, models: frozenset[str], backlog: Backlog) -> int | None:
        """Server that will run a whole request, or None if none can complete it."""
        options = self.local_servers(models)
        if not options:
            return None

        def cost(s: int) -> tuple[float, int]:
            waits = 0.0
            for m in models:
                waits += min(backlog(i) for i in self.by_model[m] if self.server_of[i] == s)
            return (waits, s)

        return min(options, key=cost)

    def choose(
        self,
        model: str,
        backlog: Backlog,
        *,
        estimate_s: float = 0.0,
        pinned: int | None = None,
        parent_servers: tuple[int, ...] = (),
        workflow_models: frozenset[str] = frozenset(),
        transfer_s: float = 0.0,
    ) -> int:
        """Instance of ``model`` that runs the next node of a request.

        The *preferred* instances keep the request local: on the pinned server;
        else those with the fewest inputs from other servers; a root node of an
        unpinned request prefers the server hosting most of its workflow.  The
        least backlogged preferred instance wins unless some instance's
        backlog plus the transfers it causes is shorter by more than
        ``spill_factor x estimate_s`` (a congested local queue next to an idle
        replica elsewhere): then the node spills there.
        """
        options = self.by_model[model]

        def crossings(i: int) -> int:
            return sum(1 for p in parent_servers if p != self.server_of[i])

        if pinned is not None:
            preferred = [i for i in options if self.server_of[i] == pinned]
        elif parent_servers:
            fewest = min(crossings(i) for i in options)
            preferred = [i for i in options if crossings(i) == fewest]
        else:
            cover = [len(workflow_models & self.server_models[self.server_of[i]]) for i in options]
            preferred = [i for i, c in zip(options, cover) if c == max(cover)]
        local = min(preferred, key=lambda i: (backlog(i), i))
        if self.spill_factor == float("inf"):
            return local
        moved = 1 if pinned is not None else 0

        def remote_cost(i: int) -> float:
            extra = crossings(i) if parent_servers else moved * (self.server_of[i] != pinned)
            return backlog(i) + extra * transfer_s

        best = min(options, key=lambda i: (remote_cost(i), i))
        if backlog(local) > remote_cost(best) + self.spill_factor * estimate_s:
            return best
        return local
