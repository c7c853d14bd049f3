"""Every timing the scheduler comparison assumes, with where it comes from.

Measured on this machine (README): one HTTP hop through the local
gateway/provider proxy costs ~1.7 ms and a waitress + Flask request ~2.5 ms.
A routing decision itself (``decide_central`` over 3 node views, with the
placement tie-break) takes ~7-8 us in Python here (timeit, 2,000 calls), so
the coordinator's per-decision time is its request handling, ~2.5 ms, and it
is *serial*: one coordinator orders all decisions on one consistent view.
A gossip node decides in-process (no extra request), ~10 us.

Assumed, and why:

* ``failover_s = 15``: the coordinator is a leader-elected singleton; a
  standby takes over when the leader's lease expires.  Kubernetes' own
  singletons (kube-scheduler, kube-controller-manager) default to
  ``--leader-elect-lease-duration=15s`` with a 2 s retry period, so the gap is
  ~13-17 s after the leader dies; 15 s is its middle.
* ``detect_s = 1.5``: the coordinator declares a worker dead after missing
  heartbeats for 1.5 s, the same budget the gossip failure detector gets
  before suspecting a peer (memberlist: 1 s probe interval + 0.5 s probe
  timeout), so neither side wins on detection by fiat.
* ``connect_timeout_s = 1``: a client (or a node forwarding) gives up on a
  crashed machine after a 1 s connect timeout and tries elsewhere; a crashed
  host sends no RST, so without such a timeout the wait would be TCP's.
* ``timeout_s = 60``: a request not answered in 60 s has failed, the OpenFaaS
  gateway's default upstream timeout (Helm chart ``gateway.upstreamTimeout``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmark.studies.sched.gossip import GossipParams

__all__ = ["SchedConfig"]


@dataclass(frozen=True)
class SchedConfig:
    rpc_s: float = 0.0017             # one request hop (client->node, node->node, ...)
    central_decide_s: float = 0.0025  # coordinator, per decision, serial
    local_decide_s: float = 0.00001   # a gossip node, per decision
    failover_s: float = 15.0
    detect_s: float = 1.5
    connect_timeout_s: float = 1.0
    timeout_s: float = 60.0
    max_wait_s: float | None = None   # None: a model's own load time (see decide.py)
    rebalance: bool = True            # central: an idle node pulls queued work it has warm
    serve_sigma: float = 0.1          # log-normal jitter of a warm call
    load_sigma: float = 0.05          # ... and of a cold load
    prewarm: bool = True              # models placed once before t = 0, same for both
    sample_s: float = 1.0             # timeline period
    window_s: float = 10.0            # rolling p99 window for recovery
    gossip: GossipParams = field(default_factory=GossipParams)

    def __post_init__(self) -> None:
        for f in ("rpc_s", "central_decide_s", "local_decide_s", "failover_s", "detect_s",
                  "connect_timeout_s", "serve_sigma", "load_sigma"):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{f} must be a finite number >= 0, got {v!r}")
        for f in ("timeout_s", "sample_s", "window_s"):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{f} must be a finite number > 0, got {v!r}")
        if self.max_wait_s is not None and not (math.isfinite(self.max_wait_s)
                                                and self.max_wait_s >= 0):
            raise ValueError(f"max_wait_s must be None or >= 0, got {self.max_wait_s!r}")
        if not isinstance(self.gossip, GossipParams):
            raise TypeError("gossip must be a GossipParams")
