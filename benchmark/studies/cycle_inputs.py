"""Recorded inputs of a plugin control cycle at scale, and a replay of cycles over them.

Why a module of its own: the control-cycle benchmark and the golden-decisions test
(tests/test_cycle_golden.py) replay the *same* recorded gateway listing and Prometheus
answers through the real ``Controller``, so a faster cycle can be shown to decide exactly
what the old one decided.  Generated from a seeded random walk; nothing here is timed.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from contracts.names import ANN_PIPELINE, ANN_SLO, ANN_STAGE, ANN_STAGES
from gateway_plugin import controller
from gateway_plugin.actuate import Gateway
from gateway_plugin.config import PluginConfig
from gateway_plugin.metrics_in import QUERIES, PrometheusReader
from gateway_plugin.policies import cv_predict
from gateway_plugin.store import Store

PERIOD_S = 5.0
WINDOW = f"{int(2 * PERIOD_S)}s"  # what Controller asks PrometheusReader.read for


class FakeResponse:  # what Gateway and prometheus-api-client use of requests.Response
    def __init__(self, status: int, content: bytes = b"null") -> None:
        self.status_code, self.content, self.text = status, content, ""

    def json(self) -> Any:
        return json.loads(self.content)


class RecordedGateway(Gateway):
    """The real ``Gateway`` with the HTTP round trip replaced by recorded answers."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        super().__init__("http://gateway.invalid", None)
        self.bodies = {b["name"]: b for b in bodies}
        self.scales = self.cpus = 0
        self.prepare()

    def prepare(self) -> None:
        """Between cycles (untimed): the gateway's next answer, with what was set so far."""
        self.listing = json.dumps(list(self.bodies.values())).encode()

    def _call(self, method: str, path: str, **kw: Any) -> FakeResponse:  # type: ignore[override]
        if path == "/system/functions" and method == "GET":
            return FakeResponse(200, self.listing)
        if path == "/system/quart/capabilities":
            return FakeResponse(200, b'{"cpu_limits": {"available": true}}')
        body = kw["json"]
        if path.startswith("/system/scale-function/"):
            self.scales += 1
            f = self.bodies[body["serviceName"]]
            f["replicas"] = f["availableReplicas"] = body["replicas"]
        else:  # PUT /system/functions: a new limits.cpu
            self.cpus += 1
            self.bodies[body["service"]]["limits"] = body["limits"]
        return FakeResponse(202)


def function_bodies(n_pipes: int, spp: int, rng: np.random.Generator) -> tuple[
        list[dict[str, Any]], np.ndarray]:
    """FunctionStatus JSON per stage, as faas-provider lists it; and service times (s)."""
    svc = rng.uniform(0.01, 0.08, size=(n_pipes, spp))
    bodies = []
    for p in range(n_pipes):
        slo = round(max(0.1, 4 * float(svc[p].sum())), 3)
        for s in range(spp):
            name = f"p{p:03d}-s{s}"
            bodies.append({
                "name": name, "image": f"ghcr.io/quart/stage:{s}", "namespace": "openfaas-fn",
                "envProcess": "python index.py", "envVars": {"STAGE": str(s)},
                "labels": {"faas_function": name, "com.openfaas.scale.min": "1",
                           "com.openfaas.scale.max": "20"},
                "annotations": {ANN_PIPELINE: f"p{p:03d}", ANN_STAGE: str(s),
                                ANN_STAGES: str(spp), ANN_SLO: str(slo)},
                "limits": {"cpu": "1000m", "memory": "1Gi"}, "requests": {"memory": "512Mi"},
                "replicas": 1, "availableReplicas": 1, "invocationCount": 0,
                "createdAt": "2024-01-01T00:00:00Z", "readOnlyRootFilesystem": False})
    return bodies, svc


def record_prometheus(svc: np.ndarray, cycles: int, rng: np.random.Generator) -> list[
        dict[str, bytes]]:
    """Recorded query results for every cycle: a random walk of load on a recorded system."""
    n_pipes, spp = svc.shape
    win = 2 * PERIOD_S
    lam = rng.uniform(5, 40, n_pipes)
    cv = np.exp(rng.uniform(np.log(0.5), np.log(3.0), n_pipes))
    scv = rng.uniform(0.2, 1.0, (n_pipes, spp))
    reps = np.ones((n_pipes, spp))
    names = [f"p{p:03d}-s{s}.openfaas-fn" for p in range(n_pipes) for s in range(spp)]
    out = []
    for k in range(cycles):
        lam = np.clip(lam * np.exp(rng.normal(0, 0.25, n_pipes)), 0.5, 200)
        cv = np.clip(cv * np.exp(rng.normal(0, 0.15, n_pipes)), 0.3, 4.0)
        rho = np.minimum(lam[:, None] * svc / reps, 0.95)
        ca = np.empty_like(svc)  # QNA-like departure CV feeds the next stage
        ca[:, 0] = cv
        for s in range(1, spp):
            ca[:, s] = np.sqrt(rho[:, s - 1] ** 2 * scv[:, s - 1] ** 2
                               + (1 - rho[:, s - 1] ** 2) * ca[:, s - 1] ** 2)
        own = svc * (1 + (ca**2 + scv**2) / 2 * rho / (1 - rho) / reps)
        lat = np.cumsum(own[:, ::-1], axis=1)[:, ::-1]  # a stage's latency includes downstream
        lam_s = np.repeat(lam[:, None], spp, 1)
        n = lam_s * win
        vals = {"arrivals": lam_s, "lat_sum": lam_s * lat, "lat_count": lam_s,
                "p99": lat * (1.5 + 0.5 * ca), "queue": np.maximum(0, lam_s * (own - svc)),
                "inflight": lam_s * lat, "replicas": reps, "ia_n": n, "ia_s": n / lam_s,
                "ia_q": n / lam_s**2 * (1 + ca**2), "c_n": n, "c_s": n * svc,
                "c_q": n * svc**2 * (1 + scv**2)}
        ts = 1.7e9 + k * PERIOD_S
        out.append({key: ('{"status":"success","data":{"resultType":"vector","result":['
                          + ",".join(f'{{"metric":{{"function_name":"{nm}"}},'
                                     f'"value":[{ts},"{v!r}"]}}'
                                     for nm, v in zip(names, a.ravel().tolist(), strict=True))
                          + "]}}").encode() for key, a in vals.items()})
        # the recorded system's own autoscaler, one period behind
        reps = np.clip(np.ceil(lam[:, None] * svc / 0.5), 1, 20)
    return out


@dataclasses.dataclass
class Replay:
    """A real ``Controller`` over recorded answers; ``step()`` runs the next cycle."""

    ctl: controller.Controller
    gw: RecordedGateway
    index: list[int]
    now: list[float]

    def prepare(self) -> None:
        """Untimed: the next period's clock, Prometheus answers and gateway listing."""
        self.index[0] += 1
        self.now[0] += PERIOD_S
        self.gw.prepare()

    def step(self) -> dict[str, Any]:
        self.prepare()
        return self.ctl.cycle()


def replay(bodies: list[dict[str, Any]], prom: list[dict[str, bytes]], redis_url: str,
           predictor: str, **cfg: Any) -> Replay:
    """A fresh Redis db and a Controller whose gateway and Prometheus answer from records.

    ``predictor="gat"`` starts from a fixed untrained checkpoint (seed 0), so the GAT path
    runs without a training round first."""
    Store(redis_url).r.flushdb()
    gw = RecordedGateway(json.loads(json.dumps(bodies)))
    reader = PrometheusReader("http://prometheus.invalid")
    key, k = {q.format(w=WINDOW): name for name, q in QUERIES.items()}, [-1]

    def answer(q: str, params: Any = None) -> Any:
        return json.loads(prom[k[0]][key[q]])["data"]["result"]
    reader.prom.custom_query = answer
    now = [1.7e9]
    conf = PluginConfig(redis_url=redis_url, period_s=PERIOD_S, **{"train_every": 0, **cfg})
    ctl = controller.Controller(conf, gw, reader, Store(redis_url), clock=lambda: now[0])
    if predictor == "gat":
        ctl.state = dataclasses.replace(ctl.state, predictor="gat", gat_checkpoint=(
            cv_predict.checkpoint_to_bytes(cv_predict.CVGAT(hidden=8, heads=2, seed=0))))
    return Replay(ctl, gw, k, now)


def decisions_digest(out: dict[str, Any]) -> list[list[Any]]:
    """What a cycle decided, per stage, without its timing-free noise (timestamps are the
    replay's clock, so they stay): function, replicas, cpu, policy, predictor, predicted CV."""
    return [[d["function"], d["replicas"], d["cpu"], d["policy"], d["predictor"],
             d["predicted_cv"], d["critical"], d["action"]] for d in out["decisions"]]
