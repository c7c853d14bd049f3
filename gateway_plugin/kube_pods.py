"""Function pods through the Kubernetes API (``QUART_ACTUATOR=kubernetes``): thin on purpose.

Two calls, nothing else, with the official client and the plugin's ServiceAccount
(deploy/kubernetes/21-plugin-rbac.yaml grants exactly these, in the function namespace):

- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=faas_function in (...)``: faas-netes
  labels every function pod ``faas_function=NAME`` and names its container after the
  function; a pod is ready when its Ready condition is True, its control endpoint is the
  zygote's control port on the pod IP (QUART_CONTROL_PORT, 8082: apart from the
  watchdog's queue of calls, so a saturated pod still answers);
- ``PATCH /api/v1/namespaces/{ns}/pods/{name}/resize`` (the Pod ``resize`` subresource,
  Kubernetes 1.33 beta, GA 1.35): a strategic-merge patch of that container's CPU
  ``limits`` and ``requests``.  The request keeps its ratio to the limit, so the pod keeps
  its QoS class (a resize may not change it).  The kubelet applies it without a restart
  (the template's resizePolicy default for CPU); a node without room answers with the
  ``PodResizePending`` condition (Deferred or Infeasible): such a pod is not resizable
  until that clears, and the plugin adds pods instead.  A cluster older than 1.33 has no
  ``resize`` subresource (404): CPU then stays as deployed, said once.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from contracts.quantity import parse_cpu
from gateway_plugin.pod_source import PodInfo, PodSourceError

log = logging.getLogger("gateway_plugin.kube_pods")
LABEL = "faas_function"
STRATEGIC = "application/strategic-merge-patch+json"
NETWORK = (OSError, ValueError, urllib3.exceptions.HTTPError)


def cpu_millis(q: Any) -> int | None:
    """A Kubernetes CPU quantity ("500m", "2", "1.5") in millicores; None if absent."""
    try:
        cpus = parse_cpu(str(q)) if q not in (None, "") else None
    except ValueError:
        return None
    return None if cpus is None else round(cpus * 1000)


def request_for(limit_new: int, limit_old: int | None, request_old: int | None) -> int | None:
    """The CPU request that keeps the pod's QoS class: equal to the limit if it was
    (Guaranteed), else the same share of it, below it (Burstable); None: leave it."""
    if request_old is None or not limit_old:
        return None
    if request_old >= limit_old:
        return limit_new
    return max(1, min(limit_new - 1, round(limit_new * request_old / limit_old)))


def resize_patch(container: str, limit_millis: int, request_millis: int | None) -> dict:
    """The body of ``PATCH pods/{name}/resize`` (strategic merge: containers by name)."""
    res: dict[str, dict[str, str]] = {"limits": {"cpu": f"{limit_millis}m"}}
    if request_millis is not None:
        res["requests"] = {"cpu": f"{request_millis}m"}
    return {"spec": {"containers": [{"name": container, "resources": res}]}}


def _container(pod: Any, function: str) -> Any:
    cs = pod.spec.containers
    return next((c for c in cs if c.name == function), cs[0])


def _condition(pod: Any, kind: str) -> Any:
    return next((c for c in (pod.status.conditions or []) if c.type == kind), None)


def pod_info(pod: Any, port: int) -> tuple[str, PodInfo] | None:
    """(function, PodInfo) of a listed pod; None for one being deleted or unlabelled."""
    fn = (pod.metadata.labels or {}).get(LABEL)
    if not fn or pod.metadata.deletion_timestamp is not None or not pod.spec.containers:
        return None
    c = _container(pod, fn)
    spec = c.resources or client.V1ResourceRequirements()
    limit = cpu_millis((spec.limits or {}).get("cpu"))
    request = cpu_millis((spec.requests or {}).get("cpu"))
    st = next((s for s in (pod.status.container_statuses or []) if s.name == c.name), None)
    if st is not None and st.resources is not None:  # what the kubelet actually applied
        limit = cpu_millis((st.resources.limits or {}).get("cpu")) or limit
        request = cpu_millis((st.resources.requests or {}).get("cpu")) or request
    ready = _condition(pod, "Ready")
    ip = pod.status.pod_ip or ""
    host = f"[{ip}]" if ":" in ip else ip
    env = {e.name: e.value for e in (c.env or []) if e.value is not None}
    try:
        npw = max(1, int(env.get("QUART_POD_WORKERS") or 1))
    except ValueError:
        npw = 1
    return fn, PodInfo(
        name=pod.metadata.name, control_url=f"http://{host}:{port}", cpu_millis=limit,
        cpu_request_millis=request,
        ready=bool(ip) and ready is not None and ready.status == "True",
        resizable=_condition(pod, "PodResizePending") is None, new_pod_workers=npw)


class KubernetesPods:
    """A ``PodSource`` over the Kubernetes API."""

    def __init__(self, api: client.CoreV1Api, namespace: str, port: int = 8082,
                 timeout_s: float = 5.0) -> None:
        self.api, self.namespace, self.port, self.timeout_s = api, namespace, port, timeout_s
        self.containers: dict[str, str] = {}  # pod -> function container, from the last list
        self.no_resize = False

    @classmethod
    def from_environment(cls, namespace: str, port: int = 8082,
                         token_file: str = SERVICE_TOKEN_FILENAME,
                         cert_file: str = SERVICE_CERT_FILENAME,
                         environ: Mapping[str, str] | None = None) -> KubernetesPods:
        """In a pod: its ServiceAccount (token and CA at the standard paths, re-read as the
        kubelet rotates them); elsewhere (a developer's machine): the kubeconfig."""
        env = os.environ if environ is None else environ
        cfg = client.Configuration()
        if env.get("KUBERNETES_SERVICE_HOST"):
            InClusterConfigLoader(token_file, cert_file, environ=env).load_and_set(cfg)
        else:
            config.load_kube_config(client_configuration=cfg)
        return cls(client.CoreV1Api(client.ApiClient(cfg)), namespace, port)

    def pods(self, functions: Sequence[str]) -> dict[str, list[PodInfo]]:
        out: dict[str, list[PodInfo]] = {f: [] for f in functions}
        if not functions:
            return out
        try:
            listed = self.api.list_namespaced_pod(
                self.namespace, label_selector=f"{LABEL} in ({','.join(functions)})",
                _request_timeout=self.timeout_s)
        except (ApiException, *NETWORK) as e:
            raise PodSourceError(f"list pods in {self.namespace}: {_why(e)}") from None
        for pod in listed.items:
            got = pod_info(pod, self.port)
            if got is not None and got[0] in out:
                out[got[0]].append(replace(got[1], resizable=False) if self.no_resize
                                   else got[1])
                self.containers[got[1].name] = _container(pod, got[0]).name
        return out

    def resize(self, function: str, pod: PodInfo, cpu_millis: int, wait_s: float = 0.0) -> bool:
        """PATCH the pod's resize subresource; with ``wait_s``, watch the pod until the
        kubelet has applied it (True) or says it cannot now (False: PodResizePending)."""
        if self.no_resize:
            raise PodSourceError("this cluster has no pods/resize subresource")
        container = self.containers.get(pod.name, function)
        body = resize_patch(container, cpu_millis,
                            request_for(cpu_millis, pod.cpu_millis, pod.cpu_request_millis))
        try:
            self.api.patch_namespaced_pod_resize(pod.name, self.namespace, body,
                                                 _content_type=STRATEGIC,
                                                 _request_timeout=self.timeout_s)
        except ApiException as e:
            if e.status == 404 and f'pods "{pod.name}" not found' in (e.body or ""):
                raise PodSourceError(f"pod {pod.name} is gone") from None
            if e.status in (404, 405):
                self.no_resize = True
                log.warning("the Kubernetes API has no pods/resize (Kubernetes < 1.33?): CPU "
                            "of function pods stays as deployed; scaling uses workers and pods")
            raise PodSourceError(f"resize {pod.name}: {_why(e)}") from None
        except NETWORK as e:
            raise PodSourceError(f"resize {pod.name}: {_why(e)}") from None
        return True if wait_s <= 0 else self._applied(pod.name, container, cpu_millis, wait_s)

    def _applied(self, name: str, container: str, cpu_millis: int, wait_s: float) -> bool:
        """Await the kubelet's answer on a watch of this one pod (the API's event, no
        polling)."""
        w = watch.Watch()
        try:
            for ev in w.stream(self.api.list_namespaced_pod, self.namespace,
                               field_selector=f"metadata.name={name}",
                               timeout_seconds=max(1, math.ceil(wait_s)),
                               _request_timeout=wait_s + self.timeout_s, deserialize=False):
                state = resize_state(ev.get("object") or {}, container, cpu_millis)
                if state != "in progress":
                    return state == "done"
        except (ApiException, *NETWORK) as e:
            raise PodSourceError(f"watch {name}: {_why(e)}") from None
        finally:
            w.stop()
        return False


def resize_state(pod: dict, container: str, want_millis: int) -> str:
    """"done" (the kubelet applied the CPU), "pending" (PodResizePending: Deferred or
    Infeasible) or "in progress", from a pod as the API sends it (JSON)."""
    status = pod.get("status") or {}
    if any(c.get("type") == "PodResizePending" for c in status.get("conditions") or []):
        return "pending"
    for st in status.get("containerStatuses") or []:
        if st.get("name") == container:
            have = cpu_millis(((st.get("resources") or {}).get("limits") or {}).get("cpu"))
            return "done" if have == want_millis else "in progress"
    return "in progress"


def _why(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}: {(e.body or '')[:200]}"
    return f"{type(e).__name__}: {e}"
