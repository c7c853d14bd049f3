"""Discrete-event execution of a workload on a static plan.

Deterministic: no clock, no threads, no randomness here -- every duration was
fixed by :mod:`workload` from the seed, and ties between simultaneous events
are broken by insertion order.  The same function runs every strategy's plan.

Model of execution (the seed's, plus transfer costs):

* each model instance (1..k GPUs) serves its nodes first come, first served;
  a k-GPU instance keeps all k GPUs busy for the node's duration;
* a node becomes ready when every parent has finished *and* its output has
  reached the node's server: ``NetworkSpec.transfer_s`` (intra- or
  inter-server, plus ``output_mb`` over ``inter_server_gbps`` if given);
* the router (:mod:`routing`) picks the instance when the last parent
  finishes, seeing each instance's backlog as *estimated* seconds of work
  (the router is not clairvoyant about ``--simulate`` durations);
* no model is ever loaded or switched: ``switch_time`` is always 0.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .assign import Plan
from .routing import Router
from .spec import SystemConfig
from .workload import Workload

__all__ = ["Execution", "SimResult", "simulate"]

_ARRIVAL, _READY, _FINISH = 0, 1, 2


@dataclass
class Execution:
    """One node run; field names follow the seed's ``executions`` entries."""

    request_id: str
    workflow_id: str
    node_id: str
    model_name: str
    gpu_id: int
    gpu_ids: tuple[int, ...]
    server_id: int
    ready_time: float = 0.0
    start_time: float = 0.0
    end_time: float = 0.0
    execution_time: float = 0.0
    estimated_time: float = 0.0
    transfer_time: float = 0.0
    cross_server_inputs: int = 0
    switch_time: float = 0.0

    @property
    def waiting_time(self) -> float:
        return self.start_time - self.ready_time

    def to_json(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "workflow_id": self.workflow_id,
            "node_id": self.node_id,
            "model_name": self.model_name,
            "gpu_id": self.gpu_id,
            "gpu_ids": list(self.gpu_ids),
            "server_id": self.server_id,
            "ready_time": round(self.ready_time, 6),
            "start_time": round(self.start_time, 6),
            "end_time": round(self.end_time, 6),
            "execution_time": round(self.execution_time, 6),
            "estimated_time": round(self.estimated_time, 6),
            "transfer_time": round(self.transfer_time, 6),
            "cross_server_inputs": self.cross_server_inputs,
            "switch_time": self.switch_time,
            "waiting_time": round(self.waiting_time, 6),
        }


@dataclass
class SimResult:
    plan: Plan
    executions: list[Execution]
    arrival_s: dict[str, float]
    completion_s: dict[str, float]
    intra_server_workflows: int
    inter_server_workflows: int
    cross_server_communications: int
    gpu_busy_s: list[float]
    gpu_executions: list[int]
    total_requests: int


@dataclass
class _Req:
    job_index: int
    pinned: int | None
    left: dict[str, int]
    runs: dict[str, Execution]
    finished: int = 0


def simulate(
    config: SystemConfig,
    plan: Plan,
    workload: Workload,
    trace: Callable[[str], None] | None = None,
    spill_factor: float = 2.0,
) -> SimResult:
    """Run ``workload`` on ``plan`` to completion; see the module docstring."""
    return _Simulation(config, plan, workload, trace, spill_factor).run()


class _Simulation:
    """The state of one run; one method per kind of event."""

    def __init__(
        self,
        config: SystemConfig,
        plan: Plan,
        workload: Workload,
        trace: Callable[[str], None] | None,
        spill_factor: float,
    ) -> None:
        self.config, self.plan, self.trace = config, plan, trace
        self.router = Router(plan, spill_factor)
        self.insts = plan.instances
        self.queues: list[deque[tuple[int, str]]] = [deque() for _ in self.insts]
        # (start, estimate) of the node each instance runs
        self.running: list[tuple[float, float] | None] = [None] * len(self.insts)
        # estimated work routed to the instance, not started
        self.reserved_s = [0.0] * len(self.insts)
        self.busy = [0.0] * plan.gpu_count
        self.count = [0] * plan.gpu_count
        # (time, insertion order, kind, instance, job, node): ties go first come, first served
        self.events: list[tuple[float, int, int, int, int, str]] = []
        self.seq = 0
        self.now = 0.0
        self.jobs = workload.jobs
        self.reqs: dict[int, _Req] = {}
        self.done: list[Execution] = []
        self.completion: dict[str, float] = {}
        self.intra = self.inter = self.csc = 0

    def run(self) -> SimResult:
        for j, job in enumerate(self.jobs):
            self.push(job.arrival_s, _ARRIVAL, -1, j, "")
        while self.events:
            self.now, _, kind, i, j, node_id = heapq.heappop(self.events)
            if kind == _ARRIVAL:
                self.arrive(j)
            elif kind == _READY:
                self.queues[i].append((j, node_id))
                self.start_next(i)
            else:
                self.finish(i, j, node_id)
        self.done.sort(key=lambda e: (e.start_time, e.request_id, e.node_id))
        return SimResult(
            plan=self.plan,
            executions=self.done,
            arrival_s={j.request_id: j.arrival_s for j in self.jobs},
            completion_s=self.completion,
            intra_server_workflows=self.intra,
            inter_server_workflows=self.inter,
            cross_server_communications=self.csc,
            gpu_busy_s=self.busy,
            gpu_executions=self.count,
            total_requests=len(self.jobs),
        )

    def push(self, t: float, kind: int, i: int, j: int, node_id: str) -> None:
        heapq.heappush(self.events, (t, self.seq, kind, i, j, node_id))
        self.seq += 1

    def backlog(self, i: int) -> float:
        run = self.running[i]
        left = max(0.0, run[0] + run[1] - self.now) if run is not None else 0.0
        return left + self.reserved_s[i]

    def arrive(self, j: int) -> None:
        job = self.jobs[j]
        wf = self.config.workflows[job.workflow_id]
        pinned = self.router.pin(wf.models, self.backlog)
        left = {n.node_id: len(wf.parents(n.node_id)) for n in wf.nodes}
        self.reqs[j] = _Req(j, pinned, left, {})
        if self.trace:
            where = f"server {pinned}" if pinned is not None else "no single server (split)"
            self.trace(
                f"[{self.now:.2f}s] request {job.request_id} ({job.workflow_id}) arrived -> {where}"
            )
        for node in wf.nodes:
            if self.reqs[j].left[node.node_id] == 0:
                self.dispatch(j, node.node_id)

    def dispatch(self, j: int, node_id: str) -> None:
        config, now = self.config, self.now
        job = self.jobs[j]
        wf = config.workflows[job.workflow_id]
        st = self.reqs[j]
        model = next(n.model for n in wf.nodes if n.node_id == node_id)
        parents = [st.runs[p] for p in wf.parents(node_id)]
        i = self.router.choose(
            model,
            self.backlog,
            estimate_s=job.estimate_s[node_id],
            pinned=st.pinned,
            parent_servers=tuple(p.server_id for p in parents),
            workflow_models=wf.models,
            transfer_s=config.network.inter_server_transfer_s,
        )
        inst = self.insts[i]
        if st.pinned is not None and inst.server != st.pinned:
            if self.trace:
                self.trace(
                    f"[{now:.2f}s] {job.request_id}/{node_id} spills from server {st.pinned} "
                    f"to server {inst.server}"
                )
            st.pinned = None
        ready = now
        crossing = 0
        for p in parents:
            same = p.server_id == inst.server
            crossing += 0 if same else 1
            out_mb = config.models[p.model_name].output_mb
            ready = max(ready, p.end_time + config.network.transfer_s(same, out_mb))
        est = job.estimate_s[node_id]
        st.runs[node_id] = Execution(
            job.request_id,
            job.workflow_id,
            node_id,
            model,
            inst.gpus[0],
            inst.gpus,
            inst.server,
            ready_time=ready,
            estimated_time=est,
            execution_time=job.actual_s[node_id],
            transfer_time=ready - now,
            cross_server_inputs=crossing,
        )
        self.reserved_s[i] += est
        self.push(ready, _READY, i, j, node_id)

    def start_next(self, i: int) -> None:
        if self.running[i] is not None or not self.queues[i]:
            return
        now = self.now
        j, node_id = self.queues[i].popleft()
        run = self.reqs[j].runs[node_id]
        self.reserved_s[i] -= run.estimated_time
        run.start_time = now
        self.running[i] = (now, run.estimated_time)
        self.push(now + run.execution_time, _FINISH, i, j, node_id)
        if self.trace:
            self.trace(
                f"[{now:.2f}s] start {run.request_id}/{node_id} ({run.model_name}) on GPU "
                f"{list(run.gpu_ids)} server {run.server_id}, waited {run.waiting_time:.2f}s"
            )

    def finish(self, i: int, j: int, node_id: str) -> None:
        st = self.reqs[j]
        run = st.runs[node_id]
        run.end_time = self.now
        self.running[i] = None
        for g in run.gpu_ids:
            self.busy[g] += run.execution_time
            self.count[g] += 1
        self.done.append(run)
        self.start_next(i)
        wf = self.config.workflows[self.jobs[j].workflow_id]
        for child in wf.children(node_id):
            st.left[child] -= 1
            if st.left[child] == 0:
                self.dispatch(j, child)
        st.finished += 1
        if st.finished == len(wf.nodes):
            self.complete(j)

    def complete(self, j: int) -> None:
        """The last node of request ``j`` finished: count where its workflow ran."""
        job, st = self.jobs[j], self.reqs[j]
        wf = self.config.workflows[job.workflow_id]
        self.completion[job.request_id] = self.now
        servers = {r.server_id for r in st.runs.values()}
        crossing = sum(1 for a, b in wf.edges if st.runs[a].server_id != st.runs[b].server_id)
        self.csc += crossing
        if len(servers) == 1:
            self.intra += 1
        else:
            self.inter += 1
        if self.trace:
            self.trace(
                f"[{self.now:.2f}s] request {job.request_id} completed in "
                f"{self.now - job.arrival_s:.2f}s on servers {sorted(servers)}, "
                f"{crossing} cross-server edges"
            )
        del self.reqs[j]
