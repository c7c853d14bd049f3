"""How the plugin realises a decision: the actuator, chosen by ``QUART_ACTUATOR``.

``gateway`` (default): replicas through ``POST /system/scale-function/{name}``; CPU through
``PUT /system/functions``, only where the gateway's status was read in full (the embedded
provider's): on faas-netes, whose status has no ``envVars``, the PUT would wipe the
function's environment, so CPU is left alone and that is logged once per function.

``kubernetes`` and ``pods``: a function runs in pod mode (a zygote and its workers per pod,
behind the watchdog) and its replicas, as the policies count them, are workers.  Three
speeds, fastest first (``realise.plan_pods``): workers inside a pod through its control
endpoint, the pod's CPU in place (Pod ``resize``), more pods through the gateway.  The two
differ only in where pods come from and how their CPU changes (a ``PodSource``):
the Kubernetes API (kube_pods.py) or the local pod runner (local_pods.py).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from gateway_plugin.actuate import ANN_PIPELINE, Function, Gateway, GatewayError, IncompleteSpec
from gateway_plugin.config import PluginConfig
from gateway_plugin.pod_control import ControlError, PodControl, Workers, read_token
from gateway_plugin.pod_source import PodInfo, PodSource, PodSourceError
from gateway_plugin.realise import PodChange, PodLimits, PodPlan, PodView, plan_pods

log = logging.getLogger("gateway_plugin.actuators")
RESIZE_WAIT_S = 2.0  # an in-place CPU change takes well under a second where the node has room


@dataclass(frozen=True)
class Actuation:
    """What one stage's actuation did, for the decision record."""
    action: str  # up | down | steady
    cpu: float | None  # CPU per replica (worker) in force afterwards, as far as known
    speeds: tuple[str, ...] = ()  # the means used: workers, cpu, pods
    note: str = ""
    error: str = ""


class Actuator(Protocol):
    name: str
    counts_workers: bool  # replicas are workers in pods (the CE cap then bounds pods)

    def view(self, functions: list[Function]) -> list[Function]: ...

    def apply(self, f: Function, replicas: int, cpu: float | None) -> Actuation: ...


def _cpu_differs(want: float | None, have: float | None) -> bool:
    return want is not None and (have is None or abs(want - have) > 0.01 * max(have, 1e-9))


class GatewayActuator:
    name, counts_workers = "gateway", False

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.refused: set[str] = set()  # functions whose CPU refusal was logged

    def view(self, functions: list[Function]) -> list[Function]:
        return functions

    def apply(self, f: Function, replicas: int, cpu: float | None) -> Actuation:
        """CPU first: a PUT that resets replicas (faas-netes does) is then undone by the
        scale call after it."""
        cpu_now, notes, errors, speeds = f.cpu, [], [], []
        if cpu is not None and _cpu_differs(cpu, f.cpu):
            try:
                self.gw.set_cpu(f, cpu)
                cpu_now = cpu
                speeds.append("cpu")
                self.refused.discard(f.name)
            except IncompleteSpec as e:
                if f.name not in self.refused:
                    log.warning("CPU actuation refused: %s", e)
                    self.refused.add(f.name)
                notes.append("CPU not changed: the gateway's status has no envVars")
            except GatewayError as e:
                errors.append(str(e))
        action = "steady"
        if replicas != f.replicas:
            try:
                self.gw.scale(f.name, replicas)
                action = "up" if replicas > f.replicas else "down"
                speeds.append("pods")
            except GatewayError as e:
                errors.append(str(e))
        for err in errors:
            log.error("acting on %s failed (next cycle re-applies): %s", f.name, err)
        return Actuation(action, cpu_now, tuple(speeds), "; ".join(notes), "; ".join(errors))


# ------------------------------------------------------------------ pod mode


@dataclass(frozen=True)
class PodSettings:
    max_workers: int = 4  # QUART_POD_MAX_WORKERS
    max_cpu_millis: int = 8000  # QUART_POD_MAX_CPU
    max_pods: int = 5  # the gateway's cap (CE: 5)
    worker_cpu: float = 1.0  # CPU per worker before CPU compensation speaks (QUART_MIN_CPU)


@dataclass
class _Seen:
    function: Function  # as the gateway reported it: replicas are pods
    pods: dict[str, PodInfo]
    views: list[PodView]
    new_pod_workers: int

    @property
    def controllable(self) -> bool:
        """Workers can change here: some ready pod's endpoint answers (or none is ready yet
        to say otherwise)."""
        ready = [v for v in self.views if v.ready]
        return not ready or any(v.controllable for v in ready)


def _millis(cpus: float | None) -> int:
    return 0 if cpus is None else max(1, round(cpus * 1000))


class PodActuator:
    counts_workers = True

    def __init__(self, name: str, gw: Gateway, source: PodSource, control: PodControl | None,
                 settings: PodSettings) -> None:
        self.name, self.gw, self.source, self.control = name, gw, source, control
        self.settings = settings
        self.seen: dict[str, _Seen] = {}
        self.cpw: dict[str, float] = {}  # CPU per worker last applied, per function
        self.known: dict[str, Workers] = {}  # each listed pod's last answer (GET or PUT)
        self.warned: set[str] = set()  # (function, reason) pairs already logged
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="pod-control")

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning(msg, *args)

    def view(self, functions: list[Function]) -> list[Function]:
        """The pipeline stages with replicas counted in workers (ready pods' workers plus
        starting pods at their initial count); the pods seen are kept for ``apply``."""
        stages = {f.name for f in functions
                  if (f.body.get("annotations") or {}).get(ANN_PIPELINE)}
        self.seen = {}
        try:
            listed = self.source.pods(sorted(stages)) if stages else {}
        except PodSourceError as e:
            log.error("listing pods failed, no pod actuation this cycle: %s", e)
            return functions
        names = {p.name for pods in listed.values() for p in pods}
        self.known = {k: w for k, w in self.known.items() if k in names}
        out = []
        for f in functions:
            if f.name not in stages:
                out.append(f)
                continue
            seen, ready_workers = self._observe(f, list(listed.get(f.name, ())))
            self.seen[f.name] = seen
            out.append(self._as_workers(f, seen, ready_workers))
        return out

    def _observe(self, f: Function, pods: list[PodInfo]) -> tuple[_Seen, int]:
        """Ask every ready pod's control endpoint (in parallel); a pod that does not answer
        is not controllable this cycle and counts as it last answered, else as its initial
        workers.  Why remember: a pod may miss a cycle (its zygote starved of CPU, a
        network blip, or a pod reached through its watchdog, where control calls queue
        behind the calls and get 429); taking its workers for the initial count then would
        size its CPU for one worker while it runs several."""
        asked = [p for p in pods if p.ready] if self.control else []
        answers = dict(zip([p.name for p in asked], self.pool.map(self._get, asked),
                           strict=True))
        npw = max([p.new_pod_workers for p in pods] or [1])
        views, ready_workers = [], 0
        for p in pods:
            w = answers.get(p.name)
            if isinstance(w, ControlError):
                self._warn_once(f"{f.name}:{w.status}", "%s: pod %s control endpoint: %s "
                                "(workers there stay as they are)", f.name, p.name, w)
            got = w if isinstance(w, Workers) else None
            if got is not None:
                self.known[p.name] = got
            last = got or self.known.get(p.name)
            views.append(PodView(p.name, last.workers if last else p.new_pod_workers,
                                 p.cpu_millis, p.ready, got is not None, p.resizable))
            if p.ready:
                ready_workers += last.ready if last else p.new_pod_workers
        return _Seen(f, {p.name: p for p in pods}, views, npw), ready_workers

    def _get(self, p: PodInfo) -> Workers | ControlError:
        assert self.control is not None
        try:
            return self.control.get(p.control_url)
        except ControlError as e:
            return e

    def _limits(self, seen: _Seen) -> PodLimits:
        f = seen.function
        return PodLimits(
            max_workers=self.settings.max_workers if self.control and seen.controllable
            else seen.new_pod_workers,
            min_workers=1, floor_cpu_millis=_millis(f.cpu),
            max_cpu_millis=max(self.settings.max_cpu_millis, _millis(f.cpu)),
            min_pods=max(1, f.min_replicas),
            max_pods=min(f.max_replicas or self.settings.max_pods, self.settings.max_pods),
            new_pod_workers=seen.new_pod_workers)

    def _as_workers(self, f: Function, seen: _Seen, ready_workers: int) -> Function:
        lim = self._limits(seen)
        ready = [v for v in seen.views if v.ready]
        servers = sum(v.workers for v in ready) + max(0, f.replicas - len(ready)) * \
            lim.new_pod_workers
        return replace(f, replicas=servers, available=ready_workers,
                       cpu=self.cpw.get(f.name), min_replicas=lim.min_pods * lim.min_workers,
                       max_replicas=lim.max_pods * lim.max_workers)

    def apply(self, f: Function, replicas: int, cpu: float | None) -> Actuation:
        seen = self.seen.get(f.name)
        if seen is None:
            return Actuation("steady", f.cpu, error=f"pods of {f.name} not listed this cycle")
        cpw = cpu if cpu is not None else self.cpw.get(f.name, self.settings.worker_cpu)
        plan = plan_pods(replicas, _millis(cpw), seen.views, seen.function.replicas,
                         self._limits(seen), stage=f.name)
        errors = [e for e in self.pool.map(lambda c: self._change(f.name, seen, c),
                                           plan.changes) if e]
        if plan.pods != seen.function.replicas:
            try:
                self.gw.scale(f.name, plan.pods)
            except GatewayError as e:
                errors.append(str(e))
        for err in errors:
            log.error("acting on %s failed (next cycle re-applies): %s", f.name, err)
        if not any("resize" in err for err in errors):
            self.cpw[f.name] = cpw
        action = "up" if plan.servers > f.replicas else \
            "down" if plan.servers < f.replicas else "steady"
        return Actuation(action, cpw, plan.speeds, _note(plan), "; ".join(errors))

    def _change(self, function: str, seen: _Seen, c: PodChange) -> str:
        """One pod: CPU up before more workers, fewer workers before CPU down."""
        pod = seen.pods[c.pod]
        up = c.cpu_millis if c.cpu_millis is not None and c.cpu_from is not None \
            and c.cpu_millis > c.cpu_from else None
        try:
            # a worker forked before its CPU is there would share the old CPU: wait for it
            if up is not None and not self.source.resize(function, pod, up,
                                                         wait_s=RESIZE_WAIT_S):
                return f"resize {c.pod} to {up}m pending: its workers stay"
            if c.workers is not None and self.control is not None:
                self.known[c.pod] = self.control.put(pod.control_url, c.workers)
            if c.cpu_millis is not None and up is None:
                self.source.resize(function, pod, c.cpu_millis)
        except PodSourceError as e:
            return f"resize {c.pod} to {c.cpu_millis}m: {e}"
        except ControlError as e:
            return f"workers of {c.pod} to {c.workers}: {e}"
        return ""


def _note(plan: PodPlan) -> str:
    return f"{plan.reason} [pods {plan.pods}, {plan.servers} worker(s)]"


def make_actuator(cfg: PluginConfig, gw: Gateway, source: PodSource | None = None) -> Actuator:
    """``QUART_ACTUATOR`` -> an actuator; ``source`` replaces where pods come from (tests,
    an in-process pod runner)."""
    if cfg.actuator == "gateway":
        return GatewayActuator(gw)
    token = read_token(cfg.control_token_file)
    if token is None:
        log.warning("no control token at %s (QUART_CONTROL_TOKEN_FILE): workers inside pods "
                    "are left as they are; CPU and pods are still scaled", cfg.control_token_file)
    if source is None:
        if cfg.actuator == "kubernetes":
            from gateway_plugin.kube_pods import KubernetesPods

            source = KubernetesPods.from_environment(cfg.function_namespace,
                                                     cfg.pod_control_port)
        else:
            from gateway_plugin.local_pods import RegistryPods

            source = RegistryPods(cfg.pod_registry)
    # a stock gateway in front of faas-netes keeps pods within the CE cap; local pods have none
    cap = cfg.ce_max_replicas if cfg.actuator == "kubernetes" else cfg.max_replicas
    settings = PodSettings(max_workers=cfg.pod_max_workers,
                           max_cpu_millis=_millis(cfg.pod_max_cpu), max_pods=cap,
                           worker_cpu=cfg.min_cpu)
    return PodActuator(cfg.actuator, gw, source, PodControl(token) if token else None, settings)
