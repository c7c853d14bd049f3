"""Servers being filled during assignment: free GPUs, models per server, load, pending instances.

Split out of ``assign`` because every strategy shares it.  The one invariant
it guards is that a placement never strands another instance: ``keeps_room``
asks whether the instances still to be placed would fit afterwards (first fit
decreasing -- a heuristic for bin packing, exact enough at a few dozen
instances per plan), and ``options`` relaxes that only when nothing else fits.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Board", "packable", "server_caps"]


def server_caps(gpu_count: int, gpus_per_server: int) -> list[int]:
    """GPUs per server: full servers, then the remainder."""
    full, rest = divmod(gpu_count, gpus_per_server)
    return [gpus_per_server] * full + ([rest] if rest else [])


def packable(sizes: list[int], free: list[int]) -> bool:
    """First fit decreasing: can ``sizes`` be packed into servers with ``free`` GPUs?"""
    room = list(free)
    for size in sorted(sizes, reverse=True):
        for s, r in enumerate(room):
            if r >= size:
                room[s] -= size
                break
        else:
            return False
    return True


class Board:
    """Servers being filled: free GPUs, models per server, estimated load, instances to place."""

    def __init__(
        self,
        caps: list[int],
        gpus: dict[str, int],
        per_instance_work: dict[str, float],
        pool: dict[str, int],
    ):
        self.free = list(caps)
        self.placed: list[Counter[str]] = [Counter() for _ in caps]
        self.total: Counter[str] = Counter()
        self.load = [0.0] * len(caps)
        self.gpus = gpus
        self.work = per_instance_work
        self.pool: Counter[str] = Counter(pool)  # instances of the replica target not yet placed
        self.budget = 0  # GPUs outside the target that bundle copies may take (GSwarm)

    @property
    def servers(self) -> range:
        return range(len(self.free))

    def models(self, s: int) -> set[str]:
        return set(self.placed[s])

    def put(self, m: str, s: int) -> None:
        assert self.gpus[m] <= self.free[s]
        self.free[s] -= self.gpus[m]
        self.placed[s][m] += 1
        self.total[m] += 1
        self.load[s] += self.work[m]
        if self.pool[m] > 0:
            self.pool[m] -= 1
        elif self.budget >= self.gpus[m]:
            self.budget -= self.gpus[m]

    def keeps_room(
        self, s: int, adding: list[str], *, all_replicas: bool = True, extra_gpus: int = 0
    ) -> bool:
        """After putting ``adding`` on ``s``, do the other instances still fit?

        ``all_replicas``: every instance left in the pool (the replica target);
        otherwise only one instance of each model not placed anywhere yet.
        """
        need = sum(self.gpus[m] for m in adding) + extra_gpus
        if need > self.free[s]:
            return False
        left = Counter(self.pool)
        left.subtract(adding)
        if all_replicas:
            sizes = [self.gpus[m] for m, n in left.items() for _ in range(max(0, n))]
        else:
            sizes = [self.gpus[m] for m in self.gpus if self.total[m] == 0 and m not in adding]
        room = list(self.free)
        room[s] -= need
        return packable(sizes, room)

    def options(self, m: str) -> list[int]:
        """Servers for one instance of ``m``: keeping all replicas placeable if possible,
        else keeping every model placeable, else any server with room."""
        for strict in (True, False):
            found = [s for s in self.servers if self.keeps_room(s, [m], all_replicas=strict)]
            if found:
                return found
        return [s for s in self.servers if self.gpus[m] <= self.free[s]]
