"""Input of the planner: models, workflows, network costs and requests, validated once.

The file formats are the ones GSwarm users already write (seed 002):

* system config JSON: ``{"models": {id: {...}}, "workflows": {id: {"nodes": [...],
  "edges": [{"from": ..., "to": ...}]}}}`` with the seed's model fields
  (``gpus_required``, ``memory_gb``, ``load_time_seconds``, ``tokens_per_second``,
  ``token_mean``/``token_std``, ``inference_time_mean``/``inference_time_std``) plus
  one optional section of ours, ``"network": {"intra_server_transfer_s": ..,
  "inter_server_transfer_s": .., "inter_server_gbps": ..}`` and an optional
  per-model ``output_mb`` (what one node sends to the next);
* workflow requests YAML: ``{"requests": [{"request_id", "timestamp", "workflow_id",
  "input_data", "node_execution_times": {node: seconds}}]}``.

Everything downstream (analysis, assignment, simulation) works on the frozen
dataclasses below and never re-checks them: a bad file is rejected here with a
:class:`PlanInputError` naming the file and the field, which the CLI prints as
``requests.yaml: requests[2].workflow_id: unknown workflow 'x'`` and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .inputs import PlanInputError, ident, list_of, mapping, number, opt_number, read_structured

__all__ = [
    "ModelSpec",
    "NetworkSpec",
    "NodeSpec",
    "PlanInputError",
    "Request",
    "SystemConfig",
    "WorkflowSpec",
    "load_config",
    "load_requests",
    "parse_config",
    "parse_requests",
]


@dataclass(frozen=True)
class ModelSpec:
    """One model: how many (consecutive, same-server) GPUs it needs and how long it runs."""

    model_id: str
    gpus_required: int = 1
    name: str = ""
    memory_gb: float = 0.0
    load_time_s: float = 0.0
    inference_time_mean_s: float | None = None
    inference_time_std_s: float = 0.0
    tokens_per_second: float | None = None
    token_mean: float | None = None
    token_std: float = 0.0
    output_mb: float = 0.0

    @property
    def has_timing(self) -> bool:
        """True when the config alone says how long one execution takes."""
        return self.mean_time_s is not None

    @property
    def mean_time_s(self) -> float | None:
        """Expected seconds of one execution, from the config (None if unknown)."""
        if self.inference_time_mean_s is not None:
            return self.inference_time_mean_s
        if self.token_mean is not None and self.tokens_per_second:
            return self.token_mean / self.tokens_per_second
        return None


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    model: str


@dataclass(frozen=True)
class WorkflowSpec:
    """A DAG of model invocations; ``nodes`` are in a topological order."""

    workflow_id: str
    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[str, str], ...]
    name: str = ""
    weight: float = 1.0  # relative frequency, used only by the request generator

    @property
    def models(self) -> frozenset[str]:
        return frozenset(n.model for n in self.nodes)

    def parents(self, node_id: str) -> tuple[str, ...]:
        return tuple(a for a, b in self.edges if b == node_id)

    def children(self, node_id: str) -> tuple[str, ...]:
        return tuple(b for a, b in self.edges if a == node_id)


@dataclass(frozen=True)
class NetworkSpec:
    """Cost of moving one node's output to the next node (seconds)."""

    intra_server_transfer_s: float = 0.0
    inter_server_transfer_s: float = 0.05
    inter_server_gbps: float | None = None

    def transfer_s(self, same_server: bool, output_mb: float) -> float:
        if same_server:
            return self.intra_server_transfer_s
        cost = self.inter_server_transfer_s
        if self.inter_server_gbps and output_mb > 0:
            cost += output_mb * 8.0 / (self.inter_server_gbps * 1000.0)
        return cost


@dataclass(frozen=True)
class SystemConfig:
    models: dict[str, ModelSpec]
    workflows: dict[str, WorkflowSpec]
    network: NetworkSpec = field(default_factory=NetworkSpec)
    source: str = "config"

    @property
    def planned_models(self) -> list[str]:
        """Models some workflow uses, in config order: the ones a plan must host."""
        used = {n.model for wf in self.workflows.values() for n in wf.nodes}
        return [m for m in self.models if m in used]


@dataclass(frozen=True)
class Request:
    request_id: str
    workflow_id: str
    timestamp: datetime | None = None
    node_execution_times: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- config


def _parse_model(src: str, model_id: str, raw: Any) -> ModelSpec:
    path = f"models.{model_id}"
    raw = mapping(src, path, raw)
    gpus = raw.get("gpus_required", 1)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise PlanInputError(src, f"{path}.gpus_required", f"must be an integer >= 1, got {gpus!r}")
    tps = opt_number(src, path, raw, "tokens_per_second", strict=True)
    return ModelSpec(
        model_id=model_id,
        gpus_required=gpus,
        name=str(raw.get("name", model_id)),
        memory_gb=opt_number(src, path, raw, "memory_gb") or 0.0,
        load_time_s=opt_number(src, path, raw, "load_time_seconds") or 0.0,
        inference_time_mean_s=opt_number(src, path, raw, "inference_time_mean", strict=True),
        inference_time_std_s=opt_number(src, path, raw, "inference_time_std") or 0.0,
        tokens_per_second=tps,
        token_mean=opt_number(src, path, raw, "token_mean", strict=True),
        token_std=opt_number(src, path, raw, "token_std") or 0.0,
        output_mb=opt_number(src, path, raw, "output_mb") or 0.0,
    )


def _topological(
    src: str, path: str, nodes: list[NodeSpec], edges: list[tuple[str, str]]
) -> tuple[NodeSpec, ...]:
    """Nodes in a topological order (stable: config order among ready nodes)."""
    indeg = {n.node_id: 0 for n in nodes}
    for _, b in edges:
        indeg[b] += 1
    order: list[NodeSpec] = []
    ready = [n for n in nodes if indeg[n.node_id] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for a, b in edges:
            if a == node.node_id:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(next(n for n in nodes if n.node_id == b))
    if len(order) != len(nodes):
        stuck = sorted(k for k, v in indeg.items() if v > 0)
        raise PlanInputError(src, f"{path}.edges", f"contain a cycle through {stuck}")
    return tuple(order)


def _parse_workflow(src: str, wf_id: str, raw: Any, models: dict[str, ModelSpec]) -> WorkflowSpec:
    path = f"workflows.{wf_id}"
    raw = mapping(src, path, raw)
    raw_nodes = list_of(src, f"{path}.nodes", raw.get("nodes"))
    if not raw_nodes:
        raise PlanInputError(src, f"{path}.nodes", "must list at least one node")
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for i, rn in enumerate(raw_nodes):
        npath = f"{path}.nodes[{i}]"
        rn = mapping(src, npath, rn)
        node_id = ident(src, f"{npath}.id", rn.get("id"))
        if node_id in seen:
            raise PlanInputError(src, f"{npath}.id", f"duplicate node id {node_id!r}")
        seen.add(node_id)
        model = ident(src, f"{npath}.model", rn.get("model"))
        if model not in models:
            raise PlanInputError(src, f"{npath}.model", f"unknown model {model!r}")
        nodes.append(NodeSpec(node_id, model))
    edges: list[tuple[str, str]] = []
    for i, re_ in enumerate(list_of(src, f"{path}.edges", raw.get("edges", []))):
        epath = f"{path}.edges[{i}]"
        re_ = mapping(src, epath, re_)
        ends = []
        for key in ("from", "to"):
            end = ident(src, f"{epath}.{key}", re_.get(key))
            if end not in seen:
                raise PlanInputError(src, f"{epath}.{key}", f"unknown node {end!r}")
            ends.append(end)
        if ends[0] == ends[1]:
            raise PlanInputError(src, epath, f"self-loop on node {ends[0]!r}")
        if (ends[0], ends[1]) not in edges:
            edges.append((ends[0], ends[1]))
    weight = raw.get("weight", 1.0)
    weight = number(src, f"{path}.weight", weight)
    return WorkflowSpec(
        workflow_id=wf_id,
        nodes=_topological(src, path, nodes, edges),
        edges=tuple(edges),
        name=str(raw.get("name", wf_id)),
        weight=weight,
    )


def _parse_network(src: str, raw: Any) -> NetworkSpec:
    if raw is None:
        return NetworkSpec()
    raw = mapping(src, "network", raw)
    known = {"intra_server_transfer_s", "inter_server_transfer_s", "inter_server_gbps"}
    for key in raw:
        if key not in known:
            raise PlanInputError(src, f"network.{key}", f"unknown field (known: {sorted(known)})")
    default = NetworkSpec()
    intra = opt_number(src, "network", raw, "intra_server_transfer_s")
    inter = opt_number(src, "network", raw, "inter_server_transfer_s")
    return NetworkSpec(
        intra_server_transfer_s=default.intra_server_transfer_s if intra is None else intra,
        inter_server_transfer_s=default.inter_server_transfer_s if inter is None else inter,
        inter_server_gbps=opt_number(src, "network", raw, "inter_server_gbps", strict=True),
    )


def parse_config(raw: Any, source: str = "config", *, overrides: bool = False) -> SystemConfig:
    """Validate a decoded system config (the seed's JSON) into a :class:`SystemConfig`.

    ``overrides``: the file only adjusts a ``--stack`` plan, so ``models`` and
    ``workflows`` may be empty or absent.
    """
    if not isinstance(raw, dict):
        raise PlanInputError(source, "", f"must be a JSON object, got {type(raw).__name__}")
    default: dict[str, Any] | None = {} if overrides else None
    models_raw = mapping(source, "models", raw.get("models", default))
    if not models_raw and not overrides:
        raise PlanInputError(source, "models", "must define at least one model")
    models = {str(k): _parse_model(source, str(k), v) for k, v in models_raw.items()}
    wfs_raw = mapping(source, "workflows", raw.get("workflows", default))
    if not wfs_raw and not overrides:
        raise PlanInputError(source, "workflows", "must define at least one workflow")
    workflows = {str(k): _parse_workflow(source, str(k), v, models) for k, v in wfs_raw.items()}
    return SystemConfig(models, workflows, _parse_network(source, raw.get("network")), source)


def load_config(path: Path, *, overrides: bool = False) -> SystemConfig:
    return parse_config(read_structured(path), path.name, overrides=overrides)


# --------------------------------------------------------------------------- requests


def _timestamp(src: str, path: str, value: Any) -> datetime | None:
    """ISO-8601 (YAML may hand us a datetime already); offsets become naive UTC."""
    if value is None:
        return None
    stamp: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            stamp = None
    if stamp is None:
        raise PlanInputError(src, path, f"must be an ISO-8601 date-time, got {value!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return stamp


def parse_requests(raw: Any, config: SystemConfig, source: str = "requests") -> list[Request]:
    """Validate decoded workflow requests against ``config`` (workflow and node ids)."""
    if not isinstance(raw, dict):
        raise PlanInputError(source, "", "must be a mapping with a 'requests' list")
    items = list_of(source, "requests", raw.get("requests"))
    out: list[Request] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        path = f"requests[{i}]"
        item = mapping(source, path, item)
        rid = ident(source, f"{path}.request_id", item.get("request_id", f"req_{i:04d}"))
        if rid in seen:
            raise PlanInputError(source, f"{path}.request_id", f"duplicate request id {rid!r}")
        seen.add(rid)
        wf_id = ident(source, f"{path}.workflow_id", item.get("workflow_id"))
        wf = config.workflows.get(wf_id)
        if wf is None:
            raise PlanInputError(source, f"{path}.workflow_id", f"unknown workflow {wf_id!r}")
        times_raw = item.get("node_execution_times") or {}
        times_raw = mapping(source, f"{path}.node_execution_times", times_raw)
        node_ids = {n.node_id for n in wf.nodes}
        times: dict[str, float] = {}
        for node_id, value in times_raw.items():
            tpath = f"{path}.node_execution_times.{node_id}"
            if str(node_id) not in node_ids:
                raise PlanInputError(source, tpath, f"workflow {wf_id!r} has no node {node_id!r}")
            times[str(node_id)] = number(source, tpath, value, strict=True)
        for node in wf.nodes:
            if node.node_id not in times and not config.models[node.model].has_timing:
                raise PlanInputError(
                    source,
                    f"{path}.node_execution_times.{node.node_id}",
                    f"missing, and model {node.model!r} in {config.source} has no "
                    "inference_time_mean or token_mean/tokens_per_second",
                )
        ts = _timestamp(source, f"{path}.timestamp", item.get("timestamp"))
        out.append(Request(rid, wf_id, ts, times))
    return out


def load_requests(path: Path, config: SystemConfig) -> list[Request]:
    return parse_requests(read_structured(path), config, path.name)
