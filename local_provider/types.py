"""Typed requests and responses of the faas-provider REST API.

Field names on the wire are exactly those of github.com/openfaas/faas-provider
(types/model.go, types/requests.go), so faas-cli, the upstream gateway and our
autoscaling plugin talk to this provider unchanged.  ``from_json`` validates
strictly and names the offending field: a rejected request changes nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.names import ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR, LABEL_SCALE_MIN
from contracts.quantity import parse_cpu
from local_provider import info
from local_provider.config import NAMESPACE

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63


class ValidationError(ValueError):
    """A request the provider refuses (400); ``field`` is the JSON field at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def check_name(value: Any, field_name: str = "service") -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field_name, "required, a non-empty string")
    # fullmatch: with match(), "$" also matches before a final "\n", and "fn\n" passed
    if len(value) > NAME_MAX or not NAME_RE.fullmatch(value):
        raise ValidationError(
            field_name,
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {NAME_MAX} characters)")
    return value


def check_namespace(value: Any, field_name: str = "namespace") -> str:
    """Only ``openfaas-fn`` exists here; empty means the default, like upstream."""
    if value is None or value == "":
        return NAMESPACE
    if not isinstance(value, str):
        raise ValidationError(field_name, "must be a string")
    if value != NAMESPACE:
        raise ValidationError(field_name, f"namespace must be: {NAMESPACE} (got {value!r})")
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _str(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationError(key, "required, a string")
        return ""
    if not isinstance(value, str):
        raise ValidationError(key, f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise ValidationError(key, "required, a non-empty string")
    return value


def _str_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(key, "must be an object of string to string")
    for k, v in value.items():
        if not isinstance(v, str):
            raise ValidationError(f"{key}.{k}", f"must be a string, got {type(v).__name__}")
    return dict(value)


def _str_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(key, "must be a list of strings")
    return list(value)


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(key, "must be a boolean")
    return value


def check_replicas(value: Any, cap: int, field_name: str = "replicas") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field_name, "required, an integer")
    if value < 0 or value > cap:
        raise ValidationError(field_name, f"{value} is outside 0..{cap} (QUART_MAX_REPLICAS)")
    return value


# What each folder annotation must hold for a replica to start.
FOLDER_NEEDS = {ANN_HANDLER: "handler.py", ANN_TEMPLATE: "index.py", ANN_WORKDIR: ""}


def check_folders(annotations: dict[str, str]) -> None:
    """Refuse (400) a deployment that can never start: its folders must exist here, on the
    provider's machine.  Accepted, it would only time out every call (found by the fuzzer)."""
    for key, needed in FOLDER_NEEDS.items():
        if key not in annotations:
            continue
        folder = Path(annotations[key])
        try:
            ok = folder.is_dir() and (not needed or (folder / needed).is_file())
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            ok = False
        if not ok:
            raise ValidationError(f"annotations.{key}", f"{str(folder)!r} is not a folder"
                                  + (f" holding {needed}" if needed else "")
                                  + " on the provider's machine")


@dataclass(frozen=True)
class FunctionResources:
    memory: str = ""
    cpu: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any], key: str) -> FunctionResources | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValidationError(key, "must be an object with optional 'memory' and 'cpu'")
        extra = set(value) - {"memory", "cpu"}
        if extra:
            raise ValidationError(f"{key}.{min(extra)}", "unknown field (memory, cpu)")
        for k in ("memory", "cpu"):
            if value.get(k) is not None and not isinstance(value[k], str):
                raise ValidationError(f"{key}.{k}", "must be a string, e.g. \"512Mi\" or \"500m\"")
        try:
            parse_cpu(value.get("cpu") or "")
        except ValueError as e:
            raise ValidationError(f"{key}.cpu", str(e)) from None
        return cls(memory=value.get("memory") or "", cpu=value.get("cpu") or "")

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("memory", self.memory), ("cpu", self.cpu)) if v}


@dataclass(frozen=True)
class FunctionDeployment:
    """Request body of ``POST``/``PUT /system/functions``."""

    service: str
    image: str
    namespace: str = NAMESPACE
    envProcess: str = ""
    envVars: dict[str, str] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    limits: FunctionResources | None = None
    requests: FunctionResources | None = None
    readOnlyRootFilesystem: bool = False

    @classmethod
    def from_json(cls, raw: Any, max_replicas: int) -> FunctionDeployment:
        body = _object(raw)
        dep = cls(
            service=check_name(body.get("service"), "service"),
            image=_str(body, "image", required=True),
            namespace=check_namespace(body.get("namespace")),
            envProcess=_str(body, "envProcess"),
            envVars=_str_map(body, "envVars"),
            constraints=_str_list(body, "constraints"),
            secrets=_str_list(body, "secrets"),
            labels=_str_map(body, "labels"),
            annotations=_str_map(body, "annotations"),
            limits=FunctionResources.from_json(body, "limits"),
            requests=FunctionResources.from_json(body, "requests"),
            readOnlyRootFilesystem=_bool(body, "readOnlyRootFilesystem"),
        )
        for key in (ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR):
            if key in dep.annotations and not dep.annotations[key].startswith("/"):
                raise ValidationError(f"annotations.{key}", "must be an absolute path")
        check_folders(dep.annotations)
        if "max_inflight" in dep.envVars:
            try:
                ok = int(dep.envVars["max_inflight"]) >= 1
            except ValueError:
                ok = False
            if not ok:
                raise ValidationError("envVars.max_inflight", "must be an integer >= 1")
        if LABEL_SCALE_MIN in dep.labels:
            try:
                check_replicas(int(dep.labels[LABEL_SCALE_MIN]), max_replicas)
            except (ValueError, ValidationError):
                raise ValidationError(f"labels.{LABEL_SCALE_MIN}",
                                      f"must be an integer in 0..{max_replicas}") from None
        return dep

    @property
    def max_inflight(self) -> int:
        """Per-replica concurrency: the replica serves this many requests at once."""
        return int(self.envVars.get("max_inflight", "8") or 8)

    @property
    def min_replicas(self) -> int:
        return int(self.labels.get(LABEL_SCALE_MIN, "1"))


@dataclass(frozen=True)
class FunctionStatus:
    """One element of ``GET /system/functions``."""

    deployment: FunctionDeployment
    invocationCount: int
    replicas: int
    availableReplicas: int
    createdAt: datetime

    def to_json(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "name": d.service,
            "image": d.image,
            "namespace": d.namespace,
            "envProcess": d.envProcess,
            "envVars": dict(d.envVars),
            "constraints": list(d.constraints),
            "secrets": list(d.secrets),
            "labels": dict(d.labels),
            "annotations": dict(d.annotations),
            "limits": d.limits.to_json() if d.limits else None,
            "requests": d.requests.to_json() if d.requests else None,
            "readOnlyRootFilesystem": d.readOnlyRootFilesystem,
            "invocationCount": self.invocationCount,
            "replicas": self.replicas,
            "availableReplicas": self.availableReplicas,
            "createdAt": self.createdAt.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class ScaleServiceRequest:
    """Body of ``POST /system/scale-function/{name}``; the path name is authoritative."""

    serviceName: str
    replicas: int
    namespace: str = NAMESPACE

    @classmethod
    def from_json(cls, raw: Any, path_name: str, max_replicas: int) -> ScaleServiceRequest:
        body = _object(raw)
        name = body.get("serviceName")
        if name not in (None, "") and name != path_name:
            raise ValidationError("serviceName",
                                  f"{name!r} does not match the path ({path_name!r})")
        if "replicas" not in body:
            raise ValidationError("replicas", "required, an integer")
        return cls(serviceName=path_name,
                   replicas=check_replicas(body.get("replicas"), max_replicas),
                   namespace=check_namespace(body.get("namespace")))


@dataclass(frozen=True)
class DeleteFunctionRequest:
    functionName: str
    namespace: str = NAMESPACE

    @classmethod
    def from_json(cls, raw: Any) -> DeleteFunctionRequest:
        body = _object(raw)
        return cls(functionName=check_name(body.get("functionName"), "functionName"),
                   namespace=check_namespace(body.get("namespace")))


@dataclass(frozen=True)
class ProviderInfo:
    """``GET /system/info`` (faas-provider InfoResponse); release and sha are ours
    (package version, git commit) unless given."""

    provider: str = "quart-local-provider"
    orchestration: str = "process"
    release: str = ""
    sha: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "orchestration": self.orchestration,
                "version": {"sha": self.sha or info.commit()[0],
                            "release": self.release or info.release()}}
