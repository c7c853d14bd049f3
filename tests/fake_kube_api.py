"""Stand-ins for what runs only on a cluster: the two Kubernetes API calls the plugin makes,
and a pod's control endpoint by its contract (issue 14) until pod mode runs here.

``FakeKubeAPI`` answers ``GET .../pods?labelSelector=faas_function in (...)`` and
``PATCH .../pods/{name}/resize`` as the API server does where it matters: Bearer token
required; the patch type must be a merge patch of an object (a JSON patch of an object is
a 400); only container CPU/memory may change (else 422); the QoS class may not change (422);
the kubelet's part is done at once (``status.containerStatuses[].resources``) unless the
node has no room (``PodResizePending``, reason Infeasible).  ``resize=False`` is a cluster
before 1.33: the subresource does not exist (404)."""
from __future__ import annotations

import copy
import json
import re
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway_plugin.kube_pods import cpu_millis
from tests.fake_http import Recorder, json_response

MERGE_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")


def function_pod(fn: str, name: str, ip: str, cpu: str = "1", request: str = "500m",
                 workers: int = 1, ready: bool = True) -> dict[str, Any]:
    """A pod as faas-netes makes them: label faas_function, container named after it."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "openfaas-fn",
                     "labels": {"faas_function": fn, "app": fn}},
        "spec": {"containers": [{
            "name": fn, "image": "ttl.sh/quart-faas/minilm-stage:0.1.0",
            "env": [{"name": "QUART_POD_WORKERS", "value": str(workers)},
                    {"name": "QUART_STAGE", "value": "1"}],
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "resources": {"limits": {"cpu": cpu, "memory": "1Gi"},
                          "requests": {"cpu": request, "memory": "512Mi"}}}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{
                       "name": fn, "ready": ready, "restartCount": 0, "image": "x",
                       "imageID": "", "resources": {"limits": {"cpu": cpu, "memory": "1Gi"},
                                                    "requests": {"cpu": request,
                                                                 "memory": "512Mi"}}}]}}


def qos(pod: dict) -> str:
    res = [c.get("resources") or {} for c in pod["spec"]["containers"]]
    if all(r.get("limits") and r.get("requests") == r.get("limits") for r in res):
        return "Guaranteed"
    return "Burstable" if any(r.get("limits") or r.get("requests") for r in res) else \
        "BestEffort"


class FakeKubeAPI(Recorder):
    def __init__(self, pods: list[dict], token: str = "sa-token", resize: bool = True,
                 node_cpu_millis: int | None = None, ssl_context: Any = None) -> None:
        self.pods = {p["metadata"]["name"]: copy.deepcopy(p) for p in pods}
        self.token, self.resize_ok, self.node_cpu = token, resize, node_cpu_millis
        super().__init__(self.handle, ssl_context=ssl_context)

    def status(self, code: int, reason: str, message: str) -> Response:
        return json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": message, "reason": reason, "code": code}, code)

    def handle(self, request: Request) -> Response:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            return self.status(401, "Unauthorized", "Unauthorized")
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/resize)?)?", request.path)
        if not m:
            return Response("404 page not found", 404)
        if request.method == "GET" and m[2] is None and \
                request.args.get("watch", "").lower() in ("true", "1"):
            return self.watch(request.args.get("fieldSelector", ""))
        if request.method == "GET" and m[2] is None:
            return self.list(request.args.get("labelSelector", ""))
        if request.method == "PATCH" and m[3]:
            if not self.resize_ok:
                return Response("404 page not found", 404)
            return self.patch_resize(m[2], request)
        return self.status(405, "MethodNotAllowed", "the server does not allow this method")

    def list(self, selector: str) -> Response:
        sel = re.fullmatch(r"faas_function in \(([^)]*)\)", selector)
        if not sel:
            return self.status(400, "BadRequest", f"unsupported selector {selector!r}")
        names = set(sel[1].split(","))
        items = [p for p in self.pods.values()
                 if p["metadata"]["labels"].get("faas_function") in names]
        return json_response({"kind": "PodList", "apiVersion": "v1",
                              "metadata": {"resourceVersion": "1"}, "items": items})

    def watch(self, selector: str) -> Response:
        """A watch of one pod: its current state as the first event (the kubelet here acts
        at once, so that is already the answer), then the stream ends (its timeout)."""
        sel = re.fullmatch(r"metadata\.name=(.+)", selector)
        if not sel or sel[1] not in self.pods:
            return self.status(400, "BadRequest", f"unsupported selector {selector!r}")
        event = json.dumps({"type": "ADDED", "object": self.pods[sel[1]]}) + "\n"
        return Response([event.encode()], 200, content_type="application/json")

    def patch_resize(self, name: str, request: Request) -> Response:
        if name not in self.pods:
            return self.status(404, "NotFound", f'pods "{name}" not found')
        ctype = (request.headers.get("Content-Type") or "").split(";")[0]
        body = json.loads(request.get_data())
        if ctype not in MERGE_TYPES or not isinstance(body, dict):
            return self.status(400, "BadRequest", f"{ctype}: cannot unmarshal the body into a "
                               "patch of that type")
        if set(body) != {"spec"} or set(body["spec"]) != {"containers"}:
            return self.status(422, "Invalid", "Pod is invalid: only container resources "
                               "may be changed through resize")
        pod = copy.deepcopy(self.pods[name])
        by_name = {c["name"]: c for c in pod["spec"]["containers"]}
        for c in body["spec"]["containers"]:
            if c["name"] not in by_name or set(c) - {"name", "resources"}:
                return self.status(422, "Invalid", "only cpu and memory resources are "
                                   "mutable")
            for kind, vals in c.get("resources", {}).items():
                by_name[c["name"]].setdefault("resources", {}).setdefault(kind, {}).update(vals)
        if qos(pod) != qos(self.pods[name]):
            return self.status(422, "Invalid", "Pod QOS Class may not change as a result of "
                               "resizing")
        self.pods[name] = pod
        self.kubelet(pod)
        return json_response(pod)

    def kubelet(self, pod: dict) -> None:
        """Apply the resize, or mark it infeasible when the node has no room."""
        conds = [c for c in pod["status"]["conditions"] if c["type"] != "PodResizePending"]
        want = sum(cpu_millis(c["resources"]["requests"]["cpu"]) or 0
                   for p in self.pods.values() for c in p["spec"]["containers"])
        if self.node_cpu is not None and want > self.node_cpu:
            conds.append({"type": "PodResizePending", "status": "True", "reason": "Infeasible",
                          "message": "Node didn't have enough capacity: cpu"})
        else:
            for c, st in zip(pod["spec"]["containers"], pod["status"]["containerStatuses"],
                             strict=True):
                st["resources"] = copy.deepcopy(c["resources"])
        pod["status"]["conditions"] = conds


class FakePodControl(Recorder):
    """A pod's ``/_/quart/workers`` by the contract: Bearer token (no token: 404, wrong:
    401), ``{"workers": N}`` with 1 <= N <= max_workers (else 400)."""

    def __init__(self, host: str, port: int, token: str | None, workers: int = 1,
                 max_workers: int = 8) -> None:
        self.token, self.workers, self.max_workers = token, workers, max_workers
        self.saturated = False  # answer as a watchdog at its max_inflight does: 429
        super().__init__(self.handle, host=host, port=port)

    def answer(self) -> Response:
        return json_response({"workers": self.workers, "ready": self.workers, "busy": 0,
                              "pid": 4242})

    def handle(self, request: Request) -> Response:
        if self.saturated:
            return Response("Concurrent request limit exceeded.", 429)
        if request.path != "/_/quart/workers" or self.token is None:
            return json_response({"error": "not found"}, 404)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return json_response({"error": "unauthorized"}, 401)
        if request.method == "GET":
            return self.answer()
        try:
            n = json.loads(request.get_data())["workers"]
            assert isinstance(n, int) and 1 <= n <= self.max_workers
        except (ValueError, KeyError, TypeError, AssertionError):
            return json_response({"error": "body must be {\"workers\": N}"}, 400)
        self.workers = n
        return self.answer()
