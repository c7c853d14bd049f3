"""A registry that survives its process: deployments on disk, live replicas adopted.

Why (issue 18, finding 1): the function store lived in memory only, so a provider restarted
after ``kill -9`` (local_provider/supervisor.py) knew no function, answered 404, and a new
``quart-faas up`` deployed fresh replicas beside the orphans (keys_manager's state.json
listed 8 while the provider knew 3).  As Kubernetes keeps Deployments in etcd while the
controller restarts:

* every change of the desired state (deploy, update, scale, delete) is written to
  ``<state>/functions.json`` (atomically); a clean shutdown, which stops every replica,
  removes it, so only a crash leaves something to take over;
* at start the records are read back and, before the reconcile loop runs, the launcher's
  live replicas (``adoptable()``: keys_manager's, local or adopted) join their function's
  pool up to its desired count, routable once ``/_/health`` answers; the rest (a function
  deleted meanwhile, one too many) are stopped.  Reconcile then starts only what is missing.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from local_provider.cpulimit import cpus_of
from local_provider.records import FunctionRecord
from local_provider.registry import Registry
from local_provider.replicas import ReplicaHandle, wait_healthy
from local_provider.router import FunctionPool, Replica
from local_provider.types import FunctionDeployment, ValidationError

log = logging.getLogger("local_provider.adopt")
RECORDS = "functions.json"


class PersistentRegistry(Registry):
    """``Registry`` whose desired state outlives the process (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records_file = Path(self.config.state_dir) / RECORDS
        self._save_lock = threading.Lock()

    def changed(self) -> None:  # deploy, update, scale and scale-from-zero: before the reply
        self.save()

    def delete(self, name: str) -> None:
        super().delete(name)
        self.save()

    def start(self) -> None:
        self.restore()
        super().start()

    def stop_all(self, timeout_s: float | None = None) -> None:
        super().stop_all(timeout_s)
        self.records_file.unlink(missing_ok=True)  # nothing runs: nothing to take over

    def save(self) -> None:
        if self._stopping.is_set():
            return
        with self.lock:
            doc = [{"deployment": r.deployment.to_json(), "desired": r.desired}
                   for r in self._functions.values()]
        with self._save_lock:
            self.records_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.records_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.records_file)

    def restore(self) -> int:
        """Read the records a crashed provider left, adopt its replicas; returns how many
        functions came back."""
        try:
            doc = json.loads(self.records_file.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            log.error("%s unreadable (%s): starting with no function", self.records_file, e)
            return 0
        for item in doc if isinstance(doc, list) else []:
            try:
                dep = FunctionDeployment.from_json(item["deployment"], self.config.max_replicas)
                source = self.admit(dep)
                desired = int(item.get("desired", dep.min_replicas))
            except (ValidationError, KeyError, TypeError, ValueError) as e:
                log.error("cannot restore a function from %s: %s", self.records_file, e)
                continue
            pool = FunctionPool(dep.service, dep.max_inflight, self.config.queue_size)
            with self.lock:
                self._functions[dep.service] = FunctionRecord(dep, source, desired, pool)
        names = self.names()
        if names:
            log.warning("restored %d function(s) a previous provider left: %s", len(names),
                        ", ".join(names))
        self._adopt()  # with no record, what is left running is stopped: nothing owns it
        return len(names)

    def _adopt(self) -> None:
        find = getattr(self.launcher, "adoptable", None)
        if find is None:
            return
        try:
            handles: list[ReplicaHandle] = find()
        except Exception as e:  # noqa: BLE001 - reconcile starts fresh replicas instead
            log.error("could not list the replicas to adopt: %s", e)
            return
        taken: Counter[str] = Counter()
        for h in handles:
            fn, index = str(h.info.get("function") or ""), int(h.info.get("index") or 0)
            with self.lock:
                rec = self._functions.get(fn)
            used = {r.index for r in rec.pool.replicas} if rec is not None else set()
            if rec is None or taken[fn] >= rec.desired or index in used:
                log.warning("stopping replica pid %d of %s: no deployment adopts it", h.pid,
                            fn or "?")
                self._spawn(functools.partial(h.terminate, self.config.stop_grace_s),
                            f"stop-orphan-{h.pid}")
                continue
            taken[fn] += 1
            r = Replica(index=index, generation=rec.generation, handle=h)
            rec.pool.add(r)
            if h.info.get("log"):
                self.logs.watch(fn, f"{fn}-{index}", Path(str(h.info["log"])))
            self._spawn(functools.partial(self._adopted, rec, r), f"adopt-{fn}-{index}")

    def _adopted(self, rec: FunctionRecord, r: Replica) -> None:
        """Routable once healthy; else stopped, and reconcile replaces it."""
        h = r.handle
        assert h is not None
        if self.limiter is not None:
            self.limiter.place(rec.name, r.index, h.pid, cpus_of(rec.deployment.limits))
        if wait_healthy(h, self.config.start_timeout_s,
                        lambda: r.draining or r.dead or self._stopping.is_set()):
            rec.pool.set_ready(r)
            log.info("adopted replica %s%s (pid %d, %s)", rec.name, r.name, h.pid, h.url)
            return
        if r.draining or self._stopping.is_set():
            return
        log.error("replica %s%s (pid %d) to adopt is not healthy: replacing it", rec.name,
                  r.name, h.pid)
        rec.pool.set_dead(r)
        h.terminate(self.config.stop_grace_s)
        rec.pool.remove(r)
