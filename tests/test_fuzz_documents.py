"""The OpenAPI documents the fuzzer works from: valid OpenAPI 3.0, and every route documented.

A route the document leaves out is never fuzzed and never promised to clients, so each
Flask app's URL map is compared with its document (methods included).
"""
from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from flask import Flask

from gateway_plugin import openapi as plugin_openapi
from gateway_plugin.app import Triggers
from gateway_plugin.app import create_app as plugin_app
from keys_manager import openapi as keys_openapi
from local_provider import openapi as lp_openapi
from local_provider.config import ProviderConfig
from local_provider.gateway_app import LocalDirectory, create_gateway_app, create_metrics_app
from local_provider.metrics import GatewayMetrics
from local_provider.provider_app import create_provider_app
from local_provider.proxy import ReplicaProxy
from local_provider.registry import Registry
from local_provider.replicas import ProcessLauncher
from local_provider.types import ANN_HANDLER, FunctionDeployment, ValidationError
from scorer import openapi as scorer_openapi
from scorer.app import create_app as scorer_app
from scorer.config import ScorerConfig
from scorer.service import ScoringService
from scorer.store import MemoryBackend

IMPLICIT = {"HEAD", "OPTIONS"}  # Flask adds them to every rule


def _provider_apps() -> dict[str, Flask]:
    cfg = ProviderConfig()
    registry = Registry(cfg, ProcessLauncher())  # never started: no replica is launched
    proxy = ReplicaProxy(registry, cfg)
    directory = LocalDirectory(registry)
    metrics = GatewayMetrics(directory.gauges)
    return {"provider": create_provider_app(registry, proxy, cfg, None),
            "gateway": create_gateway_app(proxy, directory, metrics, "http://127.0.0.1:9", None,
                                          1 << 20),
            "metrics": create_metrics_app(metrics)}


def _routes(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?[^>]+>", "{}", rule.rule)
        out |= {(path, m) for m in rule.methods - IMPLICIT}
    return out


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(re.sub(r"\{[^}]+\}", "{}", path), m.upper())
            for path, item in doc["paths"].items() for m in item}


def documents() -> dict[str, dict[str, Any]]:
    return {"gateway": lp_openapi.gateway_document(), "provider": lp_openapi.provider_document(),
            "metrics": lp_openapi.metrics_document(), "plugin": plugin_openapi.document(),
            "scorer": scorer_openapi.document(), "keys": keys_openapi.document()}


@pytest.mark.parametrize("name", ["gateway", "provider", "metrics", "plugin", "scorer", "keys"])
def test_documents_are_valid_openapi(name: str) -> None:
    doc = documents()[name]
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # the OpenAPI 3.0 meta-schema
    assert doc["openapi"] == "3.0.3" and "/openapi.json" in doc["paths"]
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert all(op.get("responses") for op in ops)
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


@pytest.mark.parametrize("name", ["provider", "metrics"])
def test_local_provider_routes_are_documented(name: str) -> None:
    assert _routes(_provider_apps()[name]) <= _documented(documents()[name])


def test_gateway_routes_are_documented() -> None:
    """The gateway forwards /system/* wholesale; its document lists what the provider serves."""
    apps = _provider_apps()
    gateway = _documented(documents()["gateway"])
    assert {r for r in _routes(apps["gateway"]) if not r[0].startswith("/system/")} <= gateway
    assert {r for r in _routes(apps["provider"]) if r[0] != "/healthz"} <= gateway


def test_plugin_and_scorer_routes_are_documented() -> None:
    scorer = scorer_app(ScoringService(ScorerConfig(db="memory"), MemoryBackend()), auth=None)
    assert _routes(plugin_app(None, Triggers(), auth=None)) == _documented(documents()["plugin"])
    assert _routes(scorer) == _documented(documents()["scorer"])


def test_served_documents_are_the_modules() -> None:
    """GET /openapi.json answers each module's document (no auth: it is outside /system/)."""
    apps = _provider_apps()
    for name in ("gateway", "provider", "metrics"):
        assert apps[name].test_client().get("/openapi.json").json == documents()[name]
    assert plugin_app(None, Triggers(), auth=None).test_client().get("/openapi.json").json == \
        documents()["plugin"]


def test_deployment_schema_requires_what_the_provider_requires(tmp_path) -> None:
    """The document's FunctionDeployment and FunctionDeployment.from_json agree on the basics:
    the required fields, and the folder annotations as an option (the image is resolved)."""
    schema = documents()["provider"]["components"]["schemas"]["FunctionDeployment"]
    assert set(schema["required"]) == {"service", "image"}
    assert "required" not in schema["properties"]["annotations"]
    assert ANN_HANDLER in schema["properties"]["annotations"]["properties"]
    FunctionDeployment.from_json({"service": "ok", "image": "x"}, 4)
    for missing in schema["required"]:
        body = {"service": "ok", "image": "x", "annotations": {ANN_HANDLER: str(tmp_path)}}
        del body[missing]
        with pytest.raises(ValidationError):
            FunctionDeployment.from_json(body, 4)
