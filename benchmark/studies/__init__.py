"""Studies and micro-benchmarks: one question each, answered on this machine.

The comparison harness (``compare``, ``systems``, ``sim``, ``live``,
``workloads``, ``report``) answers "which autoscaler is better"; each study
here measures one part (what a pipeline costs, how fast a replica starts,
how long a control cycle takes, ...) or checks the simulator against the
live system.  ``quart-faas bench`` lists them, ``quart-faas bench NAME
[ARGS]`` runs one, ``quart-faas bench --default`` runs the set ``make bench``
runs.  The registry names modules, it does not import them: most studies
import torch or start processes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Study:
    name: str
    module: str  # has ``main(argv: list[str] | None) -> int``
    summary: str  # one line for the list
    default_args: tuple[str, ...] | None = None  # in the default set, with these arguments


STUDIES: tuple[Study, ...] = (
    Study("pipeline_overhead", "benchmark.studies.pipeline_overhead",
          "monolith vs the same model as 1 and 3 functions: what a pipeline costs", ()),
    Study("scaleup", "benchmark.studies.scaleup",
          "time to a new replica: cold start vs keys_manager's T1 map and T0 fork", ()),
    Study("pool", "benchmark.studies.pool",
          "warm pool hand-over vs fork vs cold start, and wake from zero replicas", ()),
    Study("pod_burst", "benchmark.studies.pod_burst",
          "a burst on pods: the plugin forks workers, resizes CPU in place, then adds pods"),
    Study("replica_memory", "benchmark.studies.replica_memory",
          "what a forked replica dirties, mapping by mapping (/proc/PID/smaps)"),
    Study("control_cycle", "benchmark.studies.control_cycle",
          "one full plugin control cycle at 1,000 stages (target p50 <= 100 ms)",
          ("--stages", "1000")),
    Study("queue_drain", "benchmark.studies.queue_drain",
          "a function's queue draining after a burst: wake the head vs wake every waiter"),
    Study("decoder", "benchmark.studies.decoder",
          "TTFT and per-token latency of the streaming decoder pipeline (opt)", ()),
    Study("placement", "benchmark.studies.placement",
          "cache-aware vs random vs least-loaded replica placement, simulated nodes"),
    Study("sched", "benchmark.studies.sched.__main__",
          "central vs gossip scheduling of models over a cluster, simulated"),
    Study("sched_calibrate", "benchmark.studies.sched.calibrate",
          "measure the decoder row of the scheduling study's model catalogue"),
    Study("sim_calibrate", "benchmark.sim.calibrate",
          "measure the MiniLM pipeline's per-stage service times for the simulator"),
    Study("sim_validate", "benchmark.sim.validate",
          "simulated vs live MiniLM pipeline on the same arrivals"),
    Study("sim_scale", "benchmark.sim.scale",
          "the simulator on a 1-hour Azure-shaped trace over 1,000 functions"),
    Study("gil_probe", "benchmark.sim.gil_probe",
          "why the live pipeline is slower under load than its CPU explains (GIL)"),
)
BY_NAME = {s.name: s for s in STUDIES}
DEFAULT = tuple(s for s in STUDIES if s.default_args is not None)
