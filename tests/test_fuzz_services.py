"""Bounded fuzz of every HTTP API we serve (issue 8, Reliability), on real processes.

Each service is started for real (checks/fuzz_services.py), its published
OpenAPI document is loaded, and schemathesis runs its examples, boundary-value
coverage and property-based phases with a fixed seed in hypothesis'
derandomised mode, so a run is reproducible.  Every answer must be 2xx or 4xx
and conform to the document (status, content type, body schema); a request
that breaks the schema must be refused; ``/system/*`` must want credentials;
undocumented methods get 405 with ``Allow``.  Afterwards the process still
runs, answers its health check and logged no traceback.

The longer fuzz is ``python -m checks.fuzz --minutes N``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from checks.fuzz import fuzz
from checks.fuzz_services import NAMES, TARGET_FUNCTION, Fleet, Target

SEED = 8
# Per service: max examples per operation and which operations.  The gateway forwards
# /system/* to the provider (the same code), so the provider is fuzzed on its own invoke path
# only; invocations differ by method only in what the function sees, so the gateway takes
# GET and POST and the provider the other methods; PUT /system/functions validates its body
# with the code POST does (python -m checks.fuzz covers every operation on both).
OTHER_METHODS = ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def _left_to_others(ctx: Any) -> bool:
    path, method = ctx.operation.path, ctx.operation.method.upper()
    return (path.startswith("/function/") and method in OTHER_METHODS
            or (path, method) == ("/system/functions", "PUT"))


BUDGET: dict[str, dict[str, Any]] = {
    "gateway": {"max_examples": 3, "exclude": {"func": _left_to_others}},
    "provider": {"max_examples": 3, "path_regex": r"^/function/",
                 "exclude": {"method": ["GET", "POST"]}},
    "metrics": {"max_examples": 5}, "plugin": {"max_examples": 8},
    "scorer": {"max_examples": 3}, "keys": {"max_examples": 5}, "stage": {"max_examples": 8}}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory, minilm3: Path) -> dict[str, Target]:
    fleet = Fleet(tmp_path_factory.mktemp("fuzz"), list(NAMES), model_dir=minilm3)
    with fleet as started:
        yield started


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_answers_2xx_or_4xx_and_keeps_serving(targets: dict[str, Target], name: str) -> None:
    r = fuzz(targets[name], seed=SEED, **BUDGET[name])
    assert r.ok, f"{name}:\n{r.problems()}"
    assert r.requests >= 20, r  # the fuzzer really ran
    assert not [s for s in r.statuses if s.startswith("5") or s == "no answer"], r.statuses
    assert any(s.startswith("2") for s in r.statuses), r.statuses  # reached the success path
    assert any(s.startswith("4") for s in r.statuses), r.statuses  # and the refusals
    assert targets[name].healthy()


def test_invocations_reached_the_function(targets: dict[str, Target]) -> None:
    """The fuzz of /function/{name} reached the deployed function (not only 404s), and the
    stage forwarded to it through the gateway; it is still deployed and serving."""
    gw = targets["gateway"]
    r = requests.get(f"{gw.url}/system/function/{TARGET_FUNCTION}", auth=gw.auth, timeout=10)
    assert r.status_code == 200 and r.json()["invocationCount"] > 0, r.text
    assert requests.post(f"{gw.url}/function/{TARGET_FUNCTION}", data=b"x",
                         timeout=10).json()["ok"] is True


def test_every_service_publishes_its_document(targets: dict[str, Target]) -> None:
    for t in targets.values():
        doc = requests.get(t.url + t.doc_path, timeout=10).json()
        assert doc["openapi"].startswith("3.0") and doc["paths"], t.name
        assert t.doc_path in doc["paths"], t.name
