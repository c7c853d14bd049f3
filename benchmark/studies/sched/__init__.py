"""Centralised vs gossip scheduling of models over a cluster (seed 003, issue 7).

A simpy model of worker nodes that hold an LRU cache of loaded models and a
request queue each, and two schedulers choosing SERVE / COLD_START / MIGRATE
for every request: a coordinator with the exact global view
(:mod:`benchmark.studies.sched.central`) and nodes deciding for themselves from views
spread by push-pull gossip (:mod:`benchmark.studies.sched.peer`,
:mod:`benchmark.studies.sched.gossip`).  Node failures are injected and the recovery
time measured (:mod:`benchmark.studies.sched.recovery`).  Entry: :func:`run`;
command line: ``quart-faas bench sched``.
"""

from benchmark.studies.sched.config import SchedConfig
from benchmark.studies.sched.gossip import GossipParams
from benchmark.studies.sched.models import CATALOGUE, ModelSpec
from benchmark.studies.sched.run import SCHEDULERS, run

__all__ = ["CATALOGUE", "SCHEDULERS", "GossipParams", "ModelSpec", "SchedConfig", "run"]
