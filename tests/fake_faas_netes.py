"""A fault-injecting stand-in for faas-netes behind the gateway (no cluster runs here), with
the two behaviours that make a read-modify-write destructive, as upstream has them:

- ``GET /system/functions`` answers like ``pkg/k8s/function_status.go``: image, labels,
  annotations, limits/requests, replicas, but no ``envVars`` and no ``constraints``;
- ``PUT /system/functions`` (``pkg/handlers/update.go``) replaces the container env with
  the body's, drops the node selector and resets replicas to ``com.openfaas.scale.min``.

``echo_env=True`` answers like the embedded provider instead (``envVars`` and
``constraints`` in the status).  Every request is recorded (tests/fake_http.py)."""
from __future__ import annotations

import copy
import json
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fake_http import Recorder, json_response


class FakeFaasNetes(Recorder):
    def __init__(self, functions: dict[str, dict[str, Any]], echo_env: bool = False) -> None:
        """``functions``: name -> a FunctionDeployment-like dict (image, envVars, labels,
        annotations, limits, requests, constraints) plus ``replicas``."""
        self.functions = copy.deepcopy(functions)
        self.echo_env = echo_env
        super().__init__(self.handle)

    def status(self, name: str) -> dict[str, Any]:
        f = self.functions[name]
        out = {"name": name, "image": f["image"], "namespace": "openfaas-fn",
               "envProcess": f.get("envProcess", ""), "labels": f.get("labels") or {},
               "annotations": f.get("annotations") or {}, "replicas": f["replicas"],
               "availableReplicas": f["replicas"], "invocationCount": 0,
               "createdAt": "2026-01-01T00:00:00Z"}
        for k in ("limits", "requests", "secrets"):
            if f.get(k):
                out[k] = f[k]
        if self.echo_env:
            out["envVars"] = dict(f.get("envVars") or {})
            out["constraints"] = list(f.get("constraints") or [])
        return out

    def handle(self, request: Request) -> Response:
        path = request.path
        if request.method == "GET" and path == "/system/functions":
            return json_response([self.status(n) for n in sorted(self.functions)])
        if request.method == "POST" and path.startswith("/system/scale-function/"):
            name = path.rsplit("/", 1)[1]
            body = json.loads(request.get_data() or b"{}")
            if name not in self.functions:
                return Response(f"function {name} not found", 404)
            self.functions[name]["replicas"] = int(body["replicas"])
            return Response("", 202)
        if request.method in ("PUT", "POST") and path == "/system/functions":
            body = json.loads(request.get_data())
            name = body["service"]
            if request.method == "PUT" and name not in self.functions:
                return Response(f"function {name} not found", 404)
            old = self.functions.get(name, {})
            labels = body.get("labels") or {}
            self.functions[name] = {
                **body, "envVars": dict(body.get("envVars") or {}),  # replaced, not merged
                "constraints": list(body.get("constraints") or []),  # nodeSelector rebuilt
                "replicas": int(labels.get("com.openfaas.scale.min", "1")) if old else 1}
            return Response("", 202)
        if request.method == "GET" and path == "/system/info":
            return json_response({"provider": {"provider": "faas-netes", "orchestration":
                                               "kubernetes", "version": {"release": "fake"}},
                                  "version": {"release": "fake"}})
        return Response("not found", 404)
