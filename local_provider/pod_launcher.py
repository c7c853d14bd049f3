"""``QUART_LAUNCHER=pod``: every replica of a function is a pod (local_provider/pods.py).

So the path a cluster takes runs here end to end: the (upstream or local) gateway ->
this provider -> ``http://POD_IP:8080`` -> of-watchdog -> index.py in pod mode. A
replica the registry counts is a pod, as a replica faas-netes counts is; workers inside
a pod are the pod's own business (``/_/quart/workers``).

What each pod gets, as faas-netes would give it:
- the image: the template folder with the handler as ``function/`` (shrinkwrap layout);
- the function's environment (``envVars``), the provider's defaults under it; a gateway
  URL on this machine's loopback (the next stage) is reached through a relay at the pod's
  host end (local_provider/podnet.py), as a pod reaches the gateway's Service;
- the secret ``quart-control-token``: this launcher's token (created 0600 at
  ``<state_dir>/secrets/quart-control-token`` on first use; an actuator reads it there,
  as the Kubernetes one reads the Secret), so the control endpoint is on;
- its ``limits.cpu`` as the pod cgroup's quota: the registry's reconcile loop calls
  ``limiter.sync`` every tick, and a changed limit is a resize in place (no restart).
  A new pod runs without a quota until the first tick after its launch (<= 0.25 s, while
  index.py is still importing torch).

Where the plugin finds the pods (``QUART_ACTUATOR=pods``, gateway_plugin/local_pods.py):
``<state_dir>/pod-registry/<function>/<pod>.json``, one file per pod,
``{"name", "control_url", "cgroup", "ready", "workers"}``: what the Kubernetes actuator
reads from the API server (the pods of a function, each one's IP and Ready condition,
its QUART_POD_WORKERS; ``control_url`` is the pod's control port, QUART_CONTROL_PORT,
default 8082, served by its zygote) and, as its resize, the cgroup whose quota is the
pod's CPU limit. Written when the pod starts (not ready), rewritten when the registry's
readiness probe passes, removed when the pod starts draining or stops (a terminating pod
is out of the listing), each write atomic (a reader sees the old file or the new one).
Files rather than an HTTP listing on the provider: the plugin already reads them, the
cgroup is written by the plugin itself as a kubelet writes it, and the provider gains no
route, no auth surface and no client. A new launcher empties the directory: pods of an
earlier run are not its own.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from local_provider.cpulimit import Wanted
from local_provider.pods import Pod, PodRunner, PodSpec, shrinkwrap

log = logging.getLogger("local_provider.pod_launcher")
TOKEN_NAME = "quart-control-token"


class PodLauncher:
    """A ``ReplicaLauncher`` whose handles are pods; ``limiter`` applies limits.cpu."""

    def __init__(self, state_dir: Path, runner: PodRunner | None = None) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.runner = runner or PodRunner(self.state_dir)
        self.token_file = self.state_dir / "secrets" / TOKEN_NAME
        self.token = _ensure_token(self.token_file)
        self.directory = PodDirectory(self.state_dir / "pod-registry")
        self.limiter = PodCpuLimiter(self)
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, int], Pod] = {}

    def launch(self, spec: Any) -> Pod:
        """Start the pod and return at once; the registry waits for it to answer."""
        name = f"{spec.function}-{spec.index}-{secrets.token_hex(3)}"
        app = shrinkwrap(Path(spec.template_dir), Path(spec.handler_dir),
                         self.state_dir / "pods" / name / "app")
        pod = self.runner.start(PodSpec(name, app, dict(spec.env),
                                        {TOKEN_NAME: self.token.encode()},
                                        forward_ports=_loopback_ports(spec.env)))
        pod.info.update({"url": pod.url, "pod": name})
        workers = _initial_workers(spec.env)
        pod.announce = lambda state: self.directory.publish(spec.function, pod, state, workers)
        pod.set_state("starting")
        with self._lock:
            self._pods[(spec.function, spec.index)] = pod
        return pod

    def pods(self, function: str) -> list[Pod]:
        """The live pods of ``function`` (what listing pods by label gives on a cluster)."""
        with self._lock:
            return [p for (fn, _), p in sorted(self._pods.items()) if fn == function
                    and p.alive()]

    def pod(self, function: str, index: int) -> Pod | None:
        with self._lock:
            return self._pods.get((function, index))

    def forget_stopped(self) -> None:
        with self._lock:
            for key in [k for k, p in self._pods.items() if not p.alive()]:
                del self._pods[key]

    def close(self) -> None:
        with self._lock:
            pods, self._pods = list(self._pods.values()), {}
        for p in pods:  # the registry stopped them; this is for a launcher used alone
            p.stop(1.0)
        self.runner.close()


class PodCpuLimiter:
    """The registry's ``limiter``: limits.cpu of a function becomes the quota of each of
    its pods' cgroups (per pod, as a container limit is), rewritten in place on change."""

    available = True

    def __init__(self, launcher: PodLauncher) -> None:
        self.launcher = launcher
        self._lock = threading.Lock()
        self._applied: dict[tuple[str, int], tuple[int, int | None]] = {}

    def describe(self) -> dict[str, object]:
        cg = self.launcher.runner.cgroups
        return {"available": True, "cgroup": cg.mode, "path": str(cg.base),
                "reason": "QUART_LAUNCHER=pod: limits.cpu is each pod's cgroup quota"}

    def place(self, function: str, index: int, pid: int, cpus: float | None) -> None:
        """A new pod's limit in force before it is ready (CpuLimiter.place's contract)."""
        with self._lock:
            self._apply((function, index), pid, cpus)

    def _apply(self, key: tuple[str, int], pid: int, cpus: float | None) -> None:
        millis = None if cpus is None else max(1, round(cpus * 1000))
        if self._applied.get(key) == (pid, millis):
            return
        pod = self.launcher.pod(*key)
        if pod is None or pod.pid != pid or not pod.alive():
            return
        try:
            pod.resize_cpu(millis)
            self._applied[key] = (pid, millis)
        except OSError as e:
            log.warning("cpu limit of pod %s not applied: %s", pod.name, e)

    def sync(self, want: Wanted | Callable[[], Wanted]) -> None:
        """As CpuLimiter.sync: ``want`` may be a function, called under the lock."""
        with self._lock:
            self._sync(want() if callable(want) else want)

    def _sync(self, want: Wanted) -> None:
        for key, (pid, cpus) in want.items():
            self._apply(key, pid, cpus)
        for key in [k for k in self._applied if k not in want]:
            del self._applied[key]
        self.launcher.forget_stopped()

    def quota(self, function: str, index: int) -> float | None:
        pod = self.launcher.pod(function, index)
        millis = pod.cpu_millis() if pod is not None else None
        return None if millis is None else millis / 1000

    def close(self) -> None:
        pass  # each pod removes its own cgroup when it stops


class PodDirectory:
    """``<root>/<function>/<pod>.json`` per live pod, for gateway_plugin/local_pods.py."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, mode=0o700)

    def publish(self, function: str, pod: Pod, state: str, workers: int) -> None:
        """``state``: "starting" or "ready" (written), "gone" (removed)."""
        path = self.root / function / f"{pod.name}.json"
        if state == "gone":
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(exist_ok=True, mode=0o700)
        doc = {"name": pod.name, "control_url": pod.control_url, "cgroup": str(pod.cgroup),
               "ready": state == "ready", "workers": workers}
        tmp = path.with_name(path.name + ".tmp")  # not *.json: never listed half-written
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)


def _initial_workers(env: dict[str, str]) -> int:
    """QUART_POD_WORKERS as the template reads it (blank: pod mode off, one process)."""
    try:
        return max(1, int((env.get("QUART_POD_WORKERS") or "").strip() or 1))
    except ValueError:
        return 1


def _loopback_ports(env: dict[str, str]) -> tuple[int, ...]:
    """The gateway the stages call next, when it listens on this machine's loopback."""
    url = urlsplit(env.get("QUART_GATEWAY_URL", ""))
    if url.hostname in ("127.0.0.1", "localhost") and url.port:
        return (url.port,)
    return ()


def _ensure_token(path: Path) -> str:
    """This node's control token: kept across restarts (pods still running know it)."""
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return token
