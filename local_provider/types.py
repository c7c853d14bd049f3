"""Typed requests and responses of the faas-provider REST API, as pydantic models.

Field names on the wire are exactly those of github.com/openfaas/faas-provider
(types/model.go, types/requests.go), so faas-cli, the upstream gateway and our
autoscaling plugin talk to this provider unchanged; Python names are snake_case
with the upstream name as alias.  The models are the one home of the rules:
``from_json`` validates with them (strict JSON types, ``ValidationError`` naming
the offending field: a rejected request changes nothing), and the OpenAPI
document's schemas are generated from them (local_provider/openapi.py).  A class
docstring is the schema's description, so it is written for a client.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from contracts.names import ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR, LABEL_SCALE_MIN
from contracts.quantity import CPU_PATTERN, parse_cpu
from contracts.wire import Invalid, Wire, check, explained, parse
from local_provider.config import NAMESPACE

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63
NAMESPACES = ("", NAMESPACE)  # empty means the default, like upstream
ValidationError = Invalid  # a request the provider refuses (400); ``field`` is at fault

Name = Annotated[str, Field(max_length=NAME_MAX, pattern=NAME_RE.pattern,
                            description="a DNS-1123 label", examples=["nodeinfo"]),
                 explained("a DNS-1123 label (lower-case letters, digits and '-', starting and "
                           f"ending with a letter or digit, at most {NAME_MAX} characters)")]


def _namespace(value: str) -> str:
    if value not in NAMESPACES:
        raise ValueError(f"namespace must be: {NAMESPACE} (got {value!r})")
    return value or NAMESPACE


Namespace = Annotated[str, Field(json_schema_extra={"enum": list(NAMESPACES)},
                                 description=f"only {NAMESPACE} exists here"),
                      AfterValidator(_namespace)]
_NAME, _NAMESPACE = TypeAdapter(Name), TypeAdapter(Namespace)


def check_name(value: Any, field_name: str = "service") -> str:
    return check(_NAME, value, field_name)


def check_namespace(value: Any, field_name: str = "namespace") -> str:
    """Only ``openfaas-fn`` exists here; empty or absent means the default, like upstream."""
    return NAMESPACE if value is None else check(_NAMESPACE, value, field_name)


def _cap(info: ValidationInfo) -> int | None:
    """QUART_MAX_REPLICAS, which the route passes as validation context."""
    return (info.context or {}).get("max_replicas")


def check_replicas(value: int, cap: int | None) -> int:
    if cap is not None and value > cap:
        raise ValueError(f"{value} is outside 0..{cap} (QUART_MAX_REPLICAS)")
    return value


# What each folder annotation must hold for a replica to start.
FOLDER_NEEDS = {ANN_HANDLER: "handler.py", ANN_TEMPLATE: "index.py", ANN_WORKDIR: ""}


def check_folders(annotations: dict[str, str]) -> dict[str, str]:
    """Refuse (400) a deployment that can never start: its folders must be absolute paths
    to folders on the provider's machine.  Accepted, it would only time out every call
    (found by the fuzzer)."""
    for key in FOLDER_NEEDS:
        if key in annotations and not annotations[key].startswith("/"):
            raise Invalid(key, "must be an absolute path")
    for key, needed in FOLDER_NEEDS.items():
        if key not in annotations:
            continue
        folder = Path(annotations[key])
        try:
            ok = folder.is_dir() and (not needed or (folder / needed).is_file())
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            ok = False
        if not ok:
            raise Invalid(key, f"{str(folder)!r} is not a folder"
                               + (f" holding {needed}" if needed else "")
                               + " on the provider's machine")
    return annotations


def _max_inflight(env: dict[str, str]) -> dict[str, str]:
    if "max_inflight" in env:
        try:
            ok = int(env["max_inflight"]) >= 1
        except ValueError:
            ok = False
        if not ok:
            raise Invalid("max_inflight", "must be an integer >= 1")
    return env


def _cpu(value: str) -> str:
    parse_cpu(value)  # ValueError names what is wrong
    return value


Cpu = Annotated[str, Field(json_schema_extra={"pattern": CPU_PATTERN}, examples=["500m"],
                           description="a Kubernetes CPU quantity (\"500m\", \"1\", \"1.5\"), "
                                       "> 0; becomes a CFS quota per replica where cgroups "
                                       "are writable"),
                AfterValidator(_cpu)]
EnvVars = Annotated[dict[str, str], Field(description="max_inflight, if set, is an integer "
                                                      ">= 1 (concurrency per replica)"),
                    AfterValidator(_max_inflight)]
Folders = Annotated[dict[str, str], Field(
    description=f"optional, instead of the image: {ANN_HANDLER} (a folder with handler.py), "
                f"{ANN_TEMPLATE} (a folder with index.py) and {ANN_WORKDIR}, absolute paths "
                "on the provider's machine",
    json_schema_extra={"properties": {k: {"type": "string", "pattern": "^/"}
                                      for k in FOLDER_NEEDS}}),
    AfterValidator(check_folders)]


class FunctionResources(Wire, extra="forbid"):
    """faas-provider FunctionResources; an empty value is no limit."""

    memory: str = Field("", examples=["128Mi"])
    cpu: Cpu = ""

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, str]:
        return {k: v for k, v in handler(self).items() if v}


class FunctionDeployment(Wire):
    """Request body of POST/PUT /system/functions (upstream FunctionDeployment); unknown
    fields (registryAuth, network) are ignored."""

    service: Name
    image: str = Field(min_length=1, examples=["functions/nodeinfo:latest"],
                       description="resolved in the local image store: <state>/images.json "
                                   "(quart-faas build), else <QUART_BUILD_DIR>/<service> "
                                   "(faas-cli build --shrinkwrap); 400 when neither has it")
    namespace: Namespace = NAMESPACE
    env_process: str = Field("", alias="envProcess")
    env_vars: EnvVars = Field(default_factory=dict, alias="envVars")
    constraints: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(
        default_factory=dict, description=f"{LABEL_SCALE_MIN}, if set, is an integer in "
                                          "0..QUART_MAX_REPLICAS (the initial replica count)")
    annotations: Folders = Field(default_factory=dict)
    limits: FunctionResources | None = None
    requests: FunctionResources | None = None
    read_only_root_filesystem: bool = Field(False, alias="readOnlyRootFilesystem")

    @field_validator("labels")
    @classmethod
    def _scale_min(cls, labels: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if LABEL_SCALE_MIN in labels:
            cap = _cap(info)
            try:
                n = int(labels[LABEL_SCALE_MIN])
            except ValueError:
                n = -1
            if n < 0 or (cap is not None and n > cap):
                top = cap if cap is not None else "QUART_MAX_REPLICAS"
                raise Invalid(LABEL_SCALE_MIN, f"must be an integer in 0..{top}")
        return labels

    @classmethod
    def from_json(cls, raw: Any, max_replicas: int) -> FunctionDeployment:
        return parse(cls, raw, {"max_replicas": max_replicas})

    @property
    def max_inflight(self) -> int:
        """Per-replica concurrency: the replica serves this many requests at once."""
        return int(self.env_vars.get("max_inflight", "8") or 8)

    @property
    def min_replicas(self) -> int:
        return int(self.labels.get(LABEL_SCALE_MIN, "1"))


class FunctionStatus(Wire):
    """One element of GET /system/functions (faas-provider FunctionStatus)."""

    name: str
    image: str
    namespace: str
    env_process: str = Field(alias="envProcess")
    env_vars: dict[str, str] = Field(alias="envVars")
    constraints: list[str]
    secrets: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    limits: FunctionResources | None
    requests: FunctionResources | None
    read_only_root_filesystem: bool = Field(alias="readOnlyRootFilesystem")
    invocation_count: int = Field(ge=0, alias="invocationCount")
    replicas: int = Field(ge=0, description="desired replicas")
    available_replicas: int = Field(ge=0, alias="availableReplicas")
    created_at: datetime = Field(alias="createdAt")

    @classmethod
    def of(cls, dep: FunctionDeployment, invocations: int, replicas: int, available: int,
           created_at: datetime) -> FunctionStatus:
        spec = {k: getattr(dep, k) for k in _SPEC}
        return cls.model_validate({
            **spec, "name": dep.service, "invocation_count": invocations, "replicas": replicas,
            "available_replicas": available, "created_at": created_at.astimezone(UTC)})


_SPEC = tuple(k for k in FunctionDeployment.model_fields if k != "service")
_STATUSES = TypeAdapter(list[FunctionStatus])


def statuses_json(statuses: list[FunctionStatus]) -> bytes:
    """``GET /system/functions`` at once (pydantic's serializer: a third of json.dumps's
    time on a 1,000-function list, which the plugin reads every period)."""
    return _STATUSES.dump_json(statuses, by_alias=True)


class ScaleServiceRequest(Wire):
    """Body of POST /system/scale-function/{functionName}: the path names the function;
    serviceName, if given, must match it."""

    service_name: str = Field("", alias="serviceName", validate_default=True)
    replicas: int = Field(ge=0, description="0..QUART_MAX_REPLICAS")
    namespace: Namespace = NAMESPACE

    @field_validator("service_name")
    @classmethod
    def _the_path(cls, name: str, info: ValidationInfo) -> str:
        path = (info.context or {}).get("path_name", name)
        if name not in ("", path):
            raise ValueError(f"{name!r} does not match the path ({path!r})")
        return str(path)

    @field_validator("replicas")
    @classmethod
    def _capped(cls, replicas: int, info: ValidationInfo) -> int:
        return check_replicas(replicas, _cap(info))

    @classmethod
    def from_json(cls, raw: Any, path_name: str, max_replicas: int) -> ScaleServiceRequest:
        return parse(cls, raw, {"path_name": path_name, "max_replicas": max_replicas})


class DeleteFunctionRequest(Wire):
    """Body of DELETE /system/functions."""

    function_name: Name = Field(alias="functionName")
    namespace: Namespace = NAMESPACE

    @classmethod
    def from_json(cls, raw: Any) -> DeleteFunctionRequest:
        return parse(cls, raw)
