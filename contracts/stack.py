"""The one reader of faas-cli stack files; each function becomes a FunctionDeployment.

Follows faas-cli: ``${VAR}`` / ``${VAR:-default}`` substitution before YAML
parsing, YAML anchors and merge keys, ``provider.gateway`` as the default
gateway, and the deployment JSON that ``faas-cli deploy`` sends.  Labels are
checked against what OpenFaaS Community Edition accepts, because a stack that
only works on our provider is a trap for the user.

``parse_text`` is the reading step itself (expand, then ``yaml.safe_load``);
``load_stack`` (deploy, demo, benchmarks) and the planner's
``planner.stackfile`` both go through it, so a stack means the same to both.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contracts.names import (
    ANN_HANDLER,
    ANN_TEMPLATE,
    ANN_WORKDIR,
    CE_SCALE_MAX,
    LABEL_SCALE_MAX,
    LABEL_SCALE_MIN,
    PRO_ONLY_LABELS,
)

DEFAULT_NAMESPACE = "openfaas-fn"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
__all__ = ["ANN_HANDLER", "ANN_TEMPLATE", "ANN_WORKDIR", "Stack", "StackError", "StackFunction",
           "ce_label_errors", "load_stack", "min_replicas", "parse_text", "substitute"]


class StackError(ValueError):
    """The stack file is unusable; the message names the file and field."""


@dataclass
class StackFunction:
    name: str
    lang: str
    handler: str
    image: str
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    fprocess: str = ""
    namespace: str = ""

    def deployment(self, local_root: Path | None = None) -> dict[str, Any]:
        """The JSON body faas-cli deploy sends; with local_root, plus our local annotations."""
        ann = dict(self.annotations)
        if local_root is not None:
            ann.setdefault(ANN_HANDLER, str((local_root / self.handler).resolve()))
            ann.setdefault(ANN_TEMPLATE, str((local_root / "template" / self.lang).resolve()))
            ann.setdefault(ANN_WORKDIR, str(local_root.resolve()))
        body: dict[str, Any] = {
            "service": self.name, "image": self.image, "envVars": dict(self.environment),
            "labels": dict(self.labels), "annotations": ann, "constraints": list(self.constraints),
            "secrets": list(self.secrets), "readOnlyRootFilesystem": False,
        }
        if self.fprocess:
            body["envProcess"] = self.fprocess
        if self.namespace:
            body["namespace"] = self.namespace
        if self.limits:
            body["limits"] = dict(self.limits)
        if self.requests:
            body["requests"] = dict(self.requests)
        return body


@dataclass
class Stack:
    path: Path
    gateway: str
    functions: dict[str, StackFunction]

    @property
    def root(self) -> Path:
        return self.path.parent


def substitute(text: str, env: Mapping[str, str]) -> str:
    """faas-cli's expansion: ``${VAR}``, ``${VAR:-default}`` (and ``${VAR-default}``);
    an unset or empty variable without a default becomes ""."""
    return _SUBST.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def parse_text(text: str, env: Mapping[str, str] | None = None, expand: bool = True) -> Any:
    """The stack document: ``text`` with ``${VAR}`` expanded from ``env`` (default: the
    process environment), then ``yaml.safe_load``.  ``expand=False`` reads it as written
    (to write a stack back without baking in the values).  ``yaml.YAMLError`` propagates:
    each caller says where in its own error type."""
    if expand:
        text = substitute(text, os.environ if env is None else env)
    return yaml.safe_load(text)


def load_stack(path: str | Path, env: Mapping[str, str] | None = None) -> Stack:
    p = Path(path)
    if not p.is_file():
        raise StackError(f"{p}: stack file not found")
    try:
        doc = parse_text(p.read_text(), env)
    except yaml.YAMLError as e:
        raise StackError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise StackError(f"{p}: expected a mapping with 'provider' and 'functions'")
    prov = doc.get("provider")
    if not isinstance(prov, dict) or prov.get("name") not in ("openfaas", "openfaas-python3"):
        raise StackError(f"{p}: provider.name must be 'openfaas'")
    fns = doc.get("functions")
    if not isinstance(fns, dict) or not fns:
        raise StackError(f"{p}: 'functions' must map at least one function name to its spec")
    out = {name: _function(p, name, spec) for name, spec in fns.items()}
    return Stack(p.resolve(), str(prov.get("gateway") or "http://127.0.0.1:8080"), out)


def _function(p: Path, name: Any, spec: Any) -> StackFunction:
    where = f"{p}: functions.{name}"
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 63:
        raise StackError(f"{where}: name must be a DNS-1123 label (lowercase letters, digits, '-')")
    if not isinstance(spec, dict):
        raise StackError(f"{where}: expected a mapping")
    for req in ("lang", "handler", "image"):
        if not isinstance(spec.get(req), str) or not spec[req]:
            raise StackError(f"{where}.{req}: required string")
    fn = StackFunction(
        name=name, lang=spec["lang"], handler=spec["handler"], image=spec["image"],
        environment=_str_map(where, "environment", spec.get("environment")),
        labels=_str_map(where, "labels", spec.get("labels")),
        annotations=_str_map(where, "annotations", spec.get("annotations")),
        limits=_resources(where, "limits", spec.get("limits")),
        requests=_resources(where, "requests", spec.get("requests")),
        constraints=_str_list(where, "constraints", spec.get("constraints")),
        secrets=_str_list(where, "secrets", spec.get("secrets")),
        fprocess=str(spec.get("fprocess") or ""), namespace=str(spec.get("namespace") or ""),
    )
    errors = ce_label_errors(fn.labels)
    if errors:
        raise StackError(f"{where}.labels: " + "; ".join(errors))
    return fn


def _str_map(where: str, key: str, v: Any) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise StackError(f"{where}.{key}: expected a mapping")
    out = {}
    for k, val in v.items():
        if isinstance(val, (dict, list)):
            raise StackError(f"{where}.{key}.{k}: expected a scalar value")
        if val is None:
            out[str(k)] = ""
        else:
            out[str(k)] = str(val).lower() if isinstance(val, bool) else str(val)
    return out


def _str_list(where: str, key: str, v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise StackError(f"{where}.{key}: expected a list of strings")
    return list(v)


def _resources(where: str, key: str, v: Any) -> dict[str, str]:
    m = _str_map(where, key, v)
    bad = set(m) - {"memory", "cpu"}
    if bad:
        raise StackError(f"{where}.{key}: only 'memory' and 'cpu' are allowed, got {sorted(bad)}")
    return m


def ce_label_errors(labels: Mapping[str, str]) -> list[str]:
    """What OpenFaaS Community Edition would refuse in these labels."""
    errors = [f"{k} is an OpenFaaS Pro label, rejected by Community Edition"
              for k in labels if k in PRO_ONLY_LABELS]
    bounds = {}
    for k in (LABEL_SCALE_MIN, LABEL_SCALE_MAX):
        if k in labels:
            try:
                bounds[k] = int(labels[k])
            except ValueError:
                errors.append(f"{k}={labels[k]!r} is not an integer")
                continue
            if not 1 <= bounds[k] <= CE_SCALE_MAX:
                errors.append(f"{k}={bounds[k]} is outside 1..{CE_SCALE_MAX} (Community Edition)")
    lo, hi = bounds.get(LABEL_SCALE_MIN), bounds.get(LABEL_SCALE_MAX)
    if lo is not None and hi is not None and lo > hi:
        errors.append(f"{LABEL_SCALE_MIN}={lo} is above {LABEL_SCALE_MAX}={hi}")
    return errors


def min_replicas(fn: StackFunction) -> int:
    try:
        return max(1, int(fn.labels.get(LABEL_SCALE_MIN, "1")))
    except ValueError:
        return 1
