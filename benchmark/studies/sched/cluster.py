"""The shared world both schedulers run in: nodes, the open-loop client, failures, samples.

Keeping it separate from the schedulers is what makes the comparison fair:
the same nodes, the same per-request service draws (common random numbers:
request i costs the same under both schedulers), the same pre-warmed caches
and the same failure at the same instant; only the routing differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import simpy

from benchmark.results import TimelineRow
from benchmark.studies.sched.config import SchedConfig
from benchmark.studies.sched.models import ModelSpec
from benchmark.studies.sched.node import Job, WorkerNode

__all__ = ["Cluster", "Scheduler"]


class Scheduler(Protocol):
    def start(self) -> None: ...
    def handle(self, job: Job): ...  # a simpy process
    def on_idle(self, node: WorkerNode) -> None: ...
    def on_node_failed(self, name: str) -> None: ...


@dataclass(frozen=True)
class Sample:
    t_s: float
    available: frozenset[str]     # models loaded on some live node


class Cluster:
    def __init__(self, env: simpy.Environment, specs: Sequence[ModelSpec],
                 memory_mib: Sequence[float], cfg: SchedConfig,
                 load_rng: np.random.Generator) -> None:
        self.env, self.cfg = env, cfg
        self.specs = {s.name: s for s in specs}
        self.order = [s.name for s in specs]
        self.names = [f"node-{i}" for i in range(len(memory_mib))]
        self.nodes = {n: WorkerNode(env, n, float(m), self.specs, load_rng, self._done,
                                    cfg.load_sigma)
                      for n, m in zip(self.names, memory_mib, strict=True)}
        self.jobs: list[Job] = []
        self.timeline: list[TimelineRow] = []
        self.samples: list[Sample] = []
        self.scheduler: Scheduler | None = None
        self.finished = 0
        self.expected = 0
        self.all_done = env.event()
        self.lost_models: tuple[str, ...] = ()
        self.failed_at_crash = 0

    def live(self) -> list[WorkerNode]:
        return [self.nodes[n] for n in self.names if self.nodes[n].up]

    # --- set-up ------------------------------------------------------------------------
    def prewarm(self, popularity: Sequence[int]) -> None:
        """Most requested models first, each once, on the node with the most free memory."""
        for i in sorted(range(len(self.order)), key=lambda k: (-popularity[k], k)):
            spec = self.specs[self.order[i]]
            free = [(n.memory_mib - n.used_mib(), -k, n) for k, n in
                    enumerate(self.nodes[m] for m in self.names)]
            room, _, node = max(free, key=lambda x: (x[0], x[1]))
            if room >= spec.size_mib:
                node.preload(spec.name)

    # --- requests ----------------------------------------------------------------------
    def client(self, times: np.ndarray, target: np.ndarray, factors: np.ndarray,
               tokens: np.ndarray):
        """Open loop: request i leaves at times[i] whatever happened to the others."""
        assert self.scheduler is not None
        self.expected = len(times)
        if not len(times):
            self.all_done.succeed()
        for i, t in enumerate(times):
            if t > self.env.now:
                yield self.env.timeout(float(t) - self.env.now)
            job = Job(i, self.order[int(target[i])], float(t), float(factors[i]), int(tokens[i]))
            self.jobs.append(job)
            self.env.process(self.scheduler.handle(job))

    def _done(self, job: Job, node: WorkerNode) -> None:
        self._count()
        if node.up and not node.queue and self.scheduler is not None:
            self.scheduler.on_idle(node)

    def fail_job(self, job: Job) -> None:
        if not job.failed:
            job.failed = True
            self._count()

    def _count(self) -> None:
        self.finished += 1
        if self.finished >= self.expected and not self.all_done.triggered:
            self.all_done.succeed()

    # --- failures ----------------------------------------------------------------------
    def fail_node_at(self, at_s: float, name: str):
        if at_s > self.env.now:
            yield self.env.timeout(at_s - self.env.now)
        node = self.nodes[name]
        self.lost_models = tuple(sorted(node.cache))
        lost = node.fail()
        self.failed_at_crash = len(lost)
        # its last timeline row: nothing runs there from now on (dead nodes get no more rows,
        # so they count in neither the cost nor the queue/memory statistics)
        self.timeline.append(TimelineRow(t_s=self.env.now, stage=name, replicas=0, desired=0))
        for job in lost:
            self.fail_job(job)
        assert self.scheduler is not None
        self.scheduler.on_node_failed(name)

    # --- observation -------------------------------------------------------------------
    def sampler(self):
        while True:
            self.sample()
            yield self.env.timeout(self.cfg.sample_s)

    def sample(self) -> None:
        now = self.env.now
        avail: set[str] = set()
        for n in self.names:
            node = self.nodes[n]
            if node.up:
                avail.update(node.cache)
                self.timeline.append(TimelineRow(
                    t_s=now, stage=n, replicas=len(node.cache), desired=len(node.warm()),
                    queue_depth=float(node.queue_len()),
                    in_flight=float(node.current is not None),
                    memory_util=node.used_mib() / node.memory_mib))
        self.samples.append(Sample(now, frozenset(avail)))
