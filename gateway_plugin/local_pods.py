"""Local pods for ``QUART_ACTUATOR=pods``: the same pod actuator as on Kubernetes, over pods
that run on this machine (the local provider's pod launcher, ``QUART_LAUNCHER=pod``).

A pod here is a process tree (the real fwatchdog in front of index.py in pod mode) with a
CPU cgroup standing for its limit.  The plugin needs of each pod what it needs of a
Kubernetes pod: its control URL, whether it serves, and a way to change its CPU in place,
which here is the cgroup's quota, written directly (``cpu.max`` on cgroup v2,
``cpu.cfs_quota_us`` on v1; the pod sees the change at once, as after a resize).

Two ways in:
- ``LocalPods(list_pods)``: in process, a callable returning ``LocalPod`` objects, each
  with its own ``resize_cpu(millis)``;
- ``RegistryPods(directory)``: the local provider's pod launcher
  (local_provider/pod_launcher.py, ``QUART_LAUNCHER=pod``) describes each pod in
  ``<directory>/<function>/<pod>.json`` (``$QUART_STATE_DIR/pod-registry``) as
  ``{"name", "control_url", "cgroup", "ready", "workers"}`` (``workers``: what the pod
  started with, its QUART_POD_WORKERS; ``ready``: its readiness probe passed) and removes
  the file when the pod drains or stops.  The control URL is the pod's veth address and
  its zygote's control port (10.233.x.y:8082, QUART_CONTROL_PORT), routed from this
  machine's own network namespace, where the plugin runs; the token is the launcher's,
  ``$QUART_STATE_DIR/secrets/quart-control-token``.
"""
from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway_plugin.pod_source import PodInfo, PodSourceError

log = logging.getLogger("gateway_plugin.local_pods")
PERIOD_US = 100_000


@dataclass(frozen=True)
class LocalPod:
    function: str
    name: str
    control_url: str
    cpu_millis: int | None
    resize_cpu: Callable[[int], None]
    ready: bool = True
    new_pod_workers: int = 1


def read_cpu_millis(cgroup: Path) -> int | None:
    """The cgroup's CPU quota in millicores (None: unlimited or unreadable)."""
    try:
        if (cgroup / "cpu.max").is_file():  # v2: "QUOTA PERIOD" or "max PERIOD"
            quota, period = (cgroup / "cpu.max").read_text().split()
            return None if quota == "max" else round(int(quota) * 1000 / int(period))
        quota_us = int((cgroup / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us < 0 else round(quota_us * 1000 / period_us)


def write_cpu_millis(cgroup: Path, millis: int) -> None:
    quota = max(1000, millis * PERIOD_US // 1000)  # the kernel's minimum quota is 1 ms
    try:
        if (cgroup / "cpu.max").is_file():
            (cgroup / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (cgroup / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (cgroup / "cpu.cfs_quota_us").write_text(str(quota))
    except OSError as e:
        raise PodSourceError(f"CPU quota of {cgroup}: {e}") from None


class LocalPods:
    """A ``PodSource`` over pods that a callable lists."""

    def __init__(self, list_pods: Callable[[], Iterable[LocalPod]]) -> None:
        self.list_pods = list_pods
        self._resize: dict[str, Callable[[int], None]] = {}

    def pods(self, functions: Sequence[str]) -> dict[str, list[PodInfo]]:
        out: dict[str, list[PodInfo]] = {f: [] for f in functions}
        for p in self.list_pods():
            if p.function in out:
                self._resize[p.name] = p.resize_cpu
                out[p.function].append(PodInfo(
                    name=p.name, control_url=p.control_url, cpu_millis=p.cpu_millis,
                    ready=p.ready, resizable=True, new_pod_workers=p.new_pod_workers))
        return out

    def resize(self, function: str, pod: PodInfo, cpu_millis: int, wait_s: float = 0.0) -> bool:
        """A cgroup quota applies as it is written: in force on return."""
        try:
            self._resize[pod.name](cpu_millis)
        except KeyError:
            raise PodSourceError(f"pod {pod.name} is not listed") from None
        return True


class RegistryPods(LocalPods):
    """Pods described by the pod runner in a directory, read at every listing."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        super().__init__(self._scan)

    def _scan(self) -> list[LocalPod]:
        out = []
        for f in sorted(self.directory.glob("*/*.json")):
            try:
                d = json.loads(f.read_text())
                cgroup = Path(d["cgroup"])
                out.append(LocalPod(
                    function=f.parent.name, name=str(d["name"]),
                    control_url=str(d["control_url"]), cpu_millis=read_cpu_millis(cgroup),
                    resize_cpu=functools.partial(write_cpu_millis, cgroup),
                    ready=bool(d.get("ready", True)),
                    new_pod_workers=max(1, int(d.get("workers", 1)))))
            except FileNotFoundError:
                continue  # the pod went while we listed
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: not a pod description (%s): ignored", f, e)
        return out
