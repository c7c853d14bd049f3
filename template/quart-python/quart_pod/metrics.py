"""Per-pod metrics in the Prometheus text format, rendered by the zygote.

Served at ``GET /_/quart/metrics`` on the function's port (8080, through the watchdog),
without the control token: Prometheus scrapes it through the pod's annotations, as the
OpenFaaS chart's ``openfaas-pods`` job reads them::

    annotations:
      prometheus.io.scrape: "true"
      prometheus.io.port: "8080"
      prometheus.io.path: /_/quart/metrics

(The ``.`` and ``/`` spellings of these keys map to the same Kubernetes SD meta label.)
The pod's name and namespace come from service discovery, so no series here carries a
label of its own: the values are bounded by construction.
"""
from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SPAWN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class PodMetrics:
    def __init__(self, max_workers: int) -> None:
        self.registry = r = CollectorRegistry()
        self.workers = Gauge("quart_pod_workers", "Workers this pod is asked to run", registry=r)
        self.ready = Gauge("quart_pod_workers_ready", "Workers accepting requests", registry=r)
        self.busy = Gauge("quart_pod_workers_busy", "Workers serving a request now", registry=r)
        Gauge("quart_pod_max_workers", "QUART_POD_MAX_WORKERS", registry=r).set(max_workers)
        self.cpu = Gauge("quart_pod_cpu_limit_cores",
                         "CPU limit of the pod's cgroup as the pod reads it (-1: none)",
                         registry=r)
        self.spawn = Histogram("quart_pod_worker_spawn_seconds",
                               "From fork() to a worker accepting on the pod's socket",
                               buckets=SPAWN_BUCKETS, registry=r)
        self.restarts = Counter("quart_pod_worker_restarts",
                                "Workers replaced after an unexpected exit", registry=r)

    def render(self, workers: int, ready: int, busy: int) -> str:
        self.workers.set(workers)
        self.ready.set(ready)
        self.busy.set(busy)
        limit = cpu_limit_cores()
        self.cpu.set(-1 if limit is None else limit)
        return generate_latest(self.registry).decode()


def cpu_limit_cores(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """This process's CFS quota in CPUs (None: unlimited or unreadable), cgroup v2 or v1.

    Inside a container the cgroup namespace makes its own group the root; outside one
    (the local pod runner) /proc/self/cgroup names the group under the hierarchy."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "" and (root / rel / "cpu.max").is_file():
            quota, period = (root / rel / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        if "cpu" in controllers.split(","):
            for base in (root / "cpu", root / "cpu,cpuacct"):
                d = base / rel
                if (d / "cpu.cfs_quota_us").is_file():
                    us = int((d / "cpu.cfs_quota_us").read_text())
                    return None if us < 0 else us / int((d / "cpu.cfs_period_us").read_text())
    return None
