"""One regression test per defect the fuzzer found (tests/test_fuzz_services.py,
checks/fuzz.py), each pinned on the smallest real part that had it."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway_plugin.app import Triggers
from gateway_plugin.app import create_app as plugin_app
from keys_manager.config import AgentConfig
from keys_manager.metrics import AgentMetrics
from keys_manager.service import _metrics_server
from local_provider.types import ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR, FunctionDeployment
from local_provider.types import ValidationError as DeploymentInvalid
from scorer.app import create_app as scorer_app
from scorer.config import ScorerConfig
from scorer.service import ScoringService
from scorer.store import MemoryBackend

REPO = Path(__file__).resolve().parents[1]
ECHO = REPO / "tests" / "fixtures" / "echo"


# -- plugin: an alert whose status is not a string was a 500 (TypeError: unhashable) --------

@pytest.mark.parametrize("status", [{}, [], ["firing"], 1, True, None])
def test_alert_status_of_another_json_type_is_a_400(status) -> None:
    client = plugin_app(None, Triggers(), auth=None).test_client()
    for body in ({"alerts": [{"labels": {"function_name": "f"}, "status": status}]},
                 {"status": status, "alerts": [{"labels": {"function_name": "f"}}]}):
        r = client.post("/system/alert", json=body)
        assert r.status_code == 400 and "status" in r.json["error"], (body, r.data)


def test_alert_group_status_is_checked_even_when_every_alert_has_its_own() -> None:
    """Found by the long fuzz: {"status": "__not_in_enum__", "alerts": [{..., "status":
    "firing"}]} was accepted although the document (and AlertManager) allow two values."""
    client = plugin_app(None, Triggers(), auth=None).test_client()
    for group in ("__not_in_enum__", None, 3):
        body = {"status": group, "alerts": [{"labels": {"function_name": "f"},
                                             "status": "firing"}]}
        r = client.post("/system/alert", json=body)
        assert r.status_code == 400 and "status" in r.json["error"], (group, r.data)


# -- 405 without the Allow header RFC 9110 requires (scorer, plugin, stage) ------------------

def test_scorer_and_plugin_405_name_the_allowed_methods() -> None:
    scorer = scorer_app(ScoringService(ScorerConfig(db="memory"), MemoryBackend()),
                        auth=None).test_client()
    r = scorer.open("/v1/score", method="TRACE")
    assert r.status_code == 405 and "POST" in r.headers["Allow"] and r.json["error"]
    plugin = plugin_app(None, Triggers(), auth=None).test_client()
    r = plugin.put("/healthz")
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and r.json["error"]


@dataclass
class _Event:
    body: bytes
    headers: dict = field(default_factory=dict)
    method: str = "POST"


def test_stage_405_names_the_allowed_methods(minilm3: Path) -> None:
    from functions.stage.config import StageConfig
    from functions.stage.server import StageServer

    s = StageServer(StageConfig.from_env({"QUART_MODEL_DIR": str(minilm3), "QUART_STAGE": "2"}))
    res = s.handle(_Event(b"", {}, "PUT"))
    assert res["statusCode"] == 405 and res["headers"]["Allow"] == "GET, POST"


# -- template: /_/ paths reached the handler for methods other than GET ----------------------

def test_watchdog_paths_are_not_the_handlers() -> None:
    """POST /_/health ran the handler (a model stage would have run inference); now /_/health
    and /_/openapi.json are the template's: GET (and HEAD) only, 405 with Allow otherwise;
    every other path still reaches the handler."""
    code = """
import json, runpy
c = runpy.run_path(INDEX)["app"].test_client()
out = {"post_health": [c.post("/_/health").status_code, c.post("/_/health").headers.get("Allow")],
       "delete_doc": c.delete("/_/openapi.json").status_code,
       "get_health": [c.get("/_/health").status_code, c.head("/_/health").status_code],
       "no_doc": c.get("/_/openapi.json").status_code,
       "post_root": c.post("/", data=b"hi").json["body"],
       "post_deep": c.post("/a/b", data=b"x").status_code,
       "post_other": c.post("/_/other", data=b"y").json["body"]}
print(json.dumps(out))
""".replace("INDEX", repr(str(REPO / "template" / "quart-python" / "index.py")))
    env = {**os.environ, "QUART_PRELOAD": "", "QUART_HANDLER_DIR": str(ECHO)}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"post_health": [405, "GET, HEAD"], "delete_doc": 405, "get_health": [200, 200],
                   "no_doc": 404,  # the echo handler has no openapi()
                   "post_root": "hi", "post_deep": 200, "post_other": "y"}


# -- keys_manager: other methods were 501 (a 5xx), a query string made /healthz a 404 ---------

@pytest.fixture()
def keys_listener(tmp_path: Path):
    cfg = AgentConfig(socket=tmp_path / "s", keys_dir=tmp_path, shm_dir=tmp_path / "shm",
                      memory_threshold_bytes=1 << 20, metrics_port=0)
    srv = _metrics_server(cfg, AgentMetrics())
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _call(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path)
    r = c.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    c.close()
    return out


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "BREW"])
def test_keys_listener_refuses_other_methods_with_405(keys_listener: int, method: str) -> None:
    status, headers, body = _call(keys_listener, method, "/metrics")
    assert status == 405 and headers["Allow"] == "GET, HEAD" and json.loads(body)["error"]


def test_keys_listener_paths(keys_listener: int) -> None:
    assert _call(keys_listener, "GET", "/healthz?probe=1")[0] == 200
    assert _call(keys_listener, "GET", "/metrics?x")[0] == 200
    status, headers, body = _call(keys_listener, "HEAD", "/metrics")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    status, _, body = _call(keys_listener, "GET", "/openapi.json")
    assert status == 200 and "/metrics" in json.loads(body)["paths"]
    status, _, body = _call(keys_listener, "GET", "/nope")
    assert status == 404 and json.loads(body)["error"]


# -- provider: a deployment whose folders do not exist was accepted; every call then waited
#    for a replica that could never start and ended in a 504 ---------------------------------

def _deployment(**annotations: str) -> dict:
    return {"service": "fn", "image": "x", "annotations": {ANN_HANDLER: str(ECHO), **annotations}}


@pytest.mark.parametrize("key, value", [
    (ANN_HANDLER, "/"), (ANN_HANDLER, "/nonexistent/handler"), (ANN_HANDLER, "/tmp/\x00"),
    (ANN_HANDLER, str(ECHO / "handler.py")), (ANN_TEMPLATE, str(ECHO)),
    (ANN_WORKDIR, str(ECHO / "handler.py")), (ANN_WORKDIR, "/nonexistent"),
])
def test_deployment_folders_must_exist(key: str, value: str) -> None:
    with pytest.raises(DeploymentInvalid) as e:
        FunctionDeployment.from_json(_deployment(**{key: value}), 4)
    assert e.value.field == f"annotations.{key}"


def test_deployment_with_real_folders_is_accepted() -> None:
    dep = FunctionDeployment.from_json(_deployment(**{
        ANN_TEMPLATE: str(REPO / "template" / "quart-python"), ANN_WORKDIR: str(REPO)}), 4)
    assert dep.annotations[ANN_HANDLER] == str(ECHO)


# -- scorer: /v1/assign with epsilon 5e-324 made cost/epsilon inf, the plan NaN, and the JSON
#    encoder (allow_nan=False) raised: a 500 --------------------------------------------------

def test_assign_epsilon_too_small_is_a_422_and_the_smallest_allowed_is_finite() -> None:
    client = scorer_app(ScoringService(ScorerConfig(db="memory"), MemoryBackend()),
                        auth=None).test_client()
    body = {"candidate_gpu_types": ["a", "b", "c"],
            "jobs": [{"job_type": "x"}, {"job_type": "0"}, {"job_type": "y"}], "max_iter": 1}
    client.post("/v1/observe", json={"job_type": "x", "gpu_type": "b", "measured_runtime_s": 3})
    for eps in (5e-324, 1e-300, 9.9e-7):
        r = client.post("/v1/assign", json={**body, "epsilon": eps})
        assert r.status_code == 422 and r.json["field"] == "epsilon", r.data
    for it in (1, 10000):
        r = client.post("/v1/assign", json={**body, "epsilon": 1e-6, "max_iter": it})
        assert r.status_code == 200, r.data
        assert all(0 <= p <= 1 for row in r.json["plan"] for p in row)


# -- provider: a name with a trailing newline passed the DNS-1123 check ("$" matches before a
#    final "\n"), where the document's pattern refuses it --------------------------------------

@pytest.mark.parametrize("name", ["fn\n", "fn\r\n", "\nfn"])
def test_function_names_with_a_newline_are_refused(name: str) -> None:
    with pytest.raises(DeploymentInvalid) as e:
        FunctionDeployment.from_json({**_deployment(), "service": name}, 4)
    assert e.value.field == "service"


# -- provider: limits.cpu of 309+ digits parsed to inf; every reconcile tick then raised
#    OverflowError (round(inf)) and stopped syncing the cpu limits of every function ----------

def test_cpu_limit_too_large_to_be_a_number_is_refused() -> None:
    with pytest.raises(DeploymentInvalid) as e:
        FunctionDeployment.from_json({**_deployment(), "limits": {"cpu": "9" * 400}}, 4)
    assert e.value.field == "limits.cpu"
    big = FunctionDeployment.from_json({**_deployment(), "limits": {"cpu": "9" * 300}}, 4)
    assert big.limits is not None and big.limits.cpu == "9" * 300  # finite: the kernel decides
