"""A pipeline in pod mode on this machine, scaled by the real plugin: the rig of
``benchmark.studies.pod_burst`` and of tests/test_pod_burst_live.py.

Everything runs as it would in production, on one machine: ``quart-faas up`` (the local
gateway + provider as a service, Prometheus scraping it) with ``QUART_LAUNCHER=pod``, so
every replica is a pod (the real fwatchdog in front of index.py in pod mode, in its own
network namespace and CPU cgroup); a password-protected ``redis-server``; and
``python -m gateway_plugin`` with ``QUART_ACTUATOR=pods``, which finds the pods where the
launcher publishes them (``<state>/pod-registry``), forks and retires workers through
their control endpoints with the launcher's token, resizes their CPU in place (the pod's
cgroup quota) and asks the gateway for pods.

The stages are the emulated BERT-large stage (functions/stage/emulated.py): its forward
pass is a calibrated sleep on an emulated device, so a worker is capacity on a 2-core
host and a burst needs more of them, not more host CPU.

A ``Watcher`` samples, every ``sample_s``, what the plugin acts on: each pod's listing,
its control endpoint (workers, zygote pid) and its cgroup quota.  It reads, never acts.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmark import openloop
from gateway_plugin.local_pods import RegistryPods
from gateway_plugin.pod_control import ControlError, PodControl
from local_provider import deploy, plugin_services, services

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "emupod"


@dataclass(frozen=True)
class RigConfig:
    stages: int = 1
    time_scale: float = 1.0  # QUART_EMU_TIME_SCALE: the emulated forward's dilation
    slo_s: float = 1.0
    period_s: float = 1.0  # the plugin's control period
    limit_cpu_millis: int = 500  # limits.cpu of each stage: the pod's CPU floor
    worker_cpu: float = 0.25  # CPU per worker (QUART_MIN_CPU): 2 workers fit the floor
    pod_workers: int = 1  # QUART_POD_WORKERS
    max_workers: int = 3  # QUART_POD_MAX_WORKERS (the functions' and the plugin's)
    max_pods: int = 3  # com.openfaas.scale.max
    sample_s: float = 0.25


@dataclass(frozen=True)
class PodSample:
    t: float  # seconds since the rig's t0
    function: str
    pod: str
    ready: bool
    workers: int | None  # the control endpoint's answer (None: no answer)
    zygote: int | None
    cpu_millis: int | None  # the pod cgroup's quota
    control_ms: float | None = None  # how long its control endpoint took to answer


def stack_doc(cfg: RigConfig, model_dir: Path, device_dir: Path) -> dict[str, Any]:
    """stack.yml of the pipeline: the emulated stages, in pod mode."""
    fns = {}
    for i in range(cfg.stages):
        nxt = f"{PIPELINE}-{i + 1}" if i + 1 < cfg.stages else ""
        fns[f"{PIPELINE}-{i}"] = {
            "lang": "quart-python", "handler": str(REPO / "functions" / "stage"),
            "image": "ttl.sh/quart-faas/emu-stage:0.1.0",
            "environment": {
                "QUART_MODEL": "emulated-bert-large", "QUART_MODEL_DIR": str(model_dir),
                "QUART_STAGES": str(cfg.stages), "QUART_STAGE": str(i),
                "QUART_NEXT_FUNCTION": nxt, "QUART_TORCH_THREADS": "1",
                "QUART_ACCELERATOR": "cpu", "QUART_EMU_TIME_SCALE": str(cfg.time_scale),
                "QUART_EMU_DEVICES": "16", "QUART_EMU_DEVICE_DIR": str(device_dir),
                "QUART_POD_WORKERS": str(cfg.pod_workers),
                "QUART_POD_MAX_WORKERS": str(cfg.max_workers),
                # as stack.yml: the watchdog takes 8 calls (the provider sends a pod 8 at
                # most); the plugin's control calls go to the zygote's port, not counted here
                "max_inflight": "8",
                "read_timeout": "60s", "write_timeout": "60s", "exec_timeout": "60s"},
            "labels": {"com.openfaas.scale.min": "1",
                       "com.openfaas.scale.max": str(cfg.max_pods)},
            "annotations": {"com.openfaas.quart.pipeline": PIPELINE,
                            "com.openfaas.quart.stage": str(i),
                            "com.openfaas.quart.stages": str(cfg.stages),
                            "com.openfaas.quart.slo": str(cfg.slo_s)},
            "limits": {"cpu": f"{cfg.limit_cpu_millis}m"}}
    return {"version": 1.0, "provider": {"name": "openfaas"}, "functions": fns}


def plugin_env(cfg: RigConfig, state: Path) -> dict[str, str]:
    return {"QUART_ACTUATOR": "pods", "QUART_STATE_DIR": str(state),
            "QUART_CONTROL_PERIOD_S": str(cfg.period_s), "QUART_SLO_S": str(cfg.slo_s),
            "QUART_MIN_CPU": str(cfg.worker_cpu), "QUART_POD_MAX_WORKERS": str(cfg.max_workers),
            "QUART_MAX_REPLICAS": str(cfg.max_workers * cfg.max_pods),
            "QUART_TRAIN_EVERY": "0", "QUART_SCALE_DOWN_PERIODS": "3"}


class Watcher:
    """Samples the pods of the pipeline's functions until stopped."""

    def __init__(self, state: Path, functions: list[str], token: str, every_s: float,
                 t0: float) -> None:
        self.source = RegistryPods(state / "pod-registry")
        self.control = PodControl(token, timeout_s=2.0)
        self.functions, self.every_s, self.t0 = functions, every_s, t0
        self.samples: list[PodSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> list[PodSample]:
        t = time.monotonic() - self.t0
        out = []
        for fn, pods in self.source.pods(self.functions).items():
            for p in pods:
                workers = zygote = took = None
                if p.ready:
                    t1 = time.monotonic()
                    try:
                        w = self.control.get(p.control_url)
                        workers, zygote = w.workers, w.pid
                    except ControlError:
                        pass
                    took = (time.monotonic() - t1) * 1e3
                out.append(PodSample(t, fn, p.name, p.ready, workers, zygote, p.cpu_millis,
                                     took))
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples += self.sample()
            self._stop.wait(self.every_s)


@dataclass
class Rig:
    cfg: RigConfig
    state: Path
    gateway: str
    plugin: str
    auth: tuple[str, str]
    functions: list[str]
    t0: float = field(default_factory=time.monotonic)
    watcher: Watcher | None = None

    def decisions(self, n: int = 1000) -> list[dict[str, Any]]:
        """The plugin's decision records, oldest first, with ``t`` relative to t0."""
        r = requests.get(f"{self.plugin}/decisions", params={"n": n}, auth=self.auth,
                         timeout=10)
        r.raise_for_status()
        shift = time.time() - (time.monotonic() - self.t0)  # wall clock of t0
        return [{**d, "t": d["t"] - shift} for d in reversed(r.json())]

    def send(self, offsets: np.ndarray, timeout_s: float = 60.0
             ) -> tuple[float, list[openloop.Result]]:
        """Open-loop requests to stage 0 at ``offsets`` (s); returns when all are answered,
        with the rig time of offset 0."""
        body = json.dumps({"inputs": ["Serverless inference scales by fork inside a pod."]})
        start = time.monotonic() - self.t0 + 0.05  # openloop starts 50 ms after its call
        res = openloop.run(f"{self.gateway}/function/{self.functions[0]}", body.encode(),
                           offsets, workers=128, timeout_s=timeout_s)
        return start, res


@contextmanager
def pod_rig(cfg: RigConfig, state: Path, say: Callable[[str], None] = lambda m: None,
            plugin_extra: dict[str, str] | None = None) -> Iterator[Rig]:
    """Deploy the pipeline with pods, Redis and the plugin (its environment: ``plugin_env``
    and ``plugin_extra``); tear all of it down after."""
    from functions.partitioner import partition

    state = state.absolute()
    state.mkdir(parents=True, exist_ok=True)
    model = state / "models" / f"emu-bert-large-{cfg.stages}"
    if not (model / "manifest.json").is_file():
        partition(model, cfg.stages, model="emulated:bert-large")
    (state / "devices").mkdir(exist_ok=True)
    root = state / "stack"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "template").symlink_to(REPO / "template")
    (root / "stack.yml").write_text(json.dumps(stack_doc(cfg, model, state / "devices")))
    ports = [services.free_port() for _ in range(7)]
    saved = {k: os.environ.get(k) for k in ("QUART_LAUNCHER", "QUART_GATEWAY_URL")}
    os.environ["QUART_LAUNCHER"] = "pod"  # the provider service inherits it
    os.environ.pop("QUART_GATEWAY_URL", None)
    watcher = None
    try:
        stack, ep = deploy.up(str(root / "stack.yml"), f"http://127.0.0.1:{ports[0]}", state,
                              f"http://127.0.0.1:{ports[1]}", say=say, provider_port=ports[2],
                              metrics_port=ports[3], keys_metrics_port=ports[4],
                              pipeline=PIPELINE)
        auth = (deploy.USER, deploy.password_file(state).read_text().strip())
        redis_url = plugin_services.ensure_redis(state, f"redis://127.0.0.1:{ports[5]}/0", say)
        plugin = plugin_services.start_plugin(state, ep.gateway, ep.prometheus, redis_url,
                                              ports[6], say,
                                              {**plugin_env(cfg, state), **(plugin_extra or {})})
        rig = Rig(cfg, state, ep.gateway, plugin, auth, list(stack.functions))
        token = (state / "secrets" / "quart-control-token").read_text().strip()
        rig.watcher = watcher = Watcher(state, rig.functions, token, cfg.sample_s,
                                        rig.t0).start()
        yield rig
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if watcher is not None:
            watcher.stop()
        deploy.down(state, say=lambda m: None)


def burst_offsets(base_rps: float, burst_rps: float, before_s: float, burst_s: float,
                  after_s: float, cv: float, seed: int) -> np.ndarray:
    """Gamma arrivals (coefficient of variation ``cv``): ``base_rps`` for ``before_s``,
    ``burst_rps`` for ``burst_s``, ``base_rps`` again for ``after_s``."""
    parts, t = [], 0.0
    for i, (rate, dur) in enumerate(((base_rps, before_s), (burst_rps, burst_s),
                                     (base_rps, after_s))):
        if rate <= 0 or dur <= 0:
            t += max(dur, 0.0)
            continue
        off = openloop.gamma_arrivals(rate, cv, int(rate * dur * 1.5) + 10, seed=seed + i)
        parts.append(t + off[off < dur])
        t += dur
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0)
