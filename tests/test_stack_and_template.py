"""stack.yml is valid for faas-cli and OpenFaaS CE; the template works in faas-cli's layout."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests
import yaml

from contracts.stack import ANN_HANDLER, StackError, ce_label_errors, load_stack, substitute
from tests.conftest import REPO

PIPELINES = (("minilm", 3), ("opt", 2), ("emu", 4))


@pytest.mark.parametrize("pipeline,n", PIPELINES)
def test_stack_yml_parses_and_is_community_edition_valid(pipeline, n):
    stack = load_stack(REPO / "stack.yml", {})
    assert list(stack.functions) == [f"{p}-stage-{i}" for p, k in PIPELINES for i in range(k)]
    raw = yaml.safe_load((REPO / "stack.yml").read_text())
    assert str(raw["version"]) == "1.0" and raw["provider"]["name"] == "openfaas"
    fns = [f for f in stack.functions.values() if f.name.startswith(f"{pipeline}-")]
    for i, fn in enumerate(fns):
        assert fn.lang == "quart-python" and fn.handler == "./functions/stage"
        assert ce_label_errors(fn.labels) == []
        assert int(fn.labels["com.openfaas.scale.max"]) <= 5
        assert not any(k.startswith("com.openfaas.scale.")
                       and k.split(".")[-1] not in ("min", "max") for k in fn.labels)
        assert fn.annotations["com.openfaas.quart.pipeline"] == pipeline
        assert fn.annotations["com.openfaas.quart.stage"] == str(i)
        assert (fn.annotations["com.openfaas.quart.stages"] == fn.environment["QUART_STAGES"]
                == str(n))
        assert fn.environment["QUART_STAGE"] == str(i)
        assert fn.environment["QUART_NEXT_FUNCTION"] == ("" if i == n - 1
                                                         else f"{pipeline}-stage-{i + 1}")
        assert fn.environment["QUART_GATEWAY_URL"] == "http://gateway.openfaas:8080"
        assert fn.limits and fn.requests


def test_deployment_json_has_faas_cli_field_names():
    stack = load_stack(REPO / "stack.yml", {"REGISTRY": "example.com/me"})
    body = stack.functions["minilm-stage-1"].deployment()
    assert body["service"] == "minilm-stage-1"
    assert body["image"] == "example.com/me/minilm-stage:0.1.0"
    assert set(body) >= {"service", "image", "envVars", "labels", "annotations", "limits",
                         "requests", "constraints", "secrets"}
    assert ANN_HANDLER not in body["annotations"]
    local = stack.functions["minilm-stage-1"].deployment(REPO)
    assert local["annotations"][ANN_HANDLER] == str(REPO / "functions" / "stage")


@pytest.mark.parametrize("text,env,expected", [
    ("${A}", {"A": "1"}, "1"),
    ("${A:-x}", {}, "x"),
    ("${A:-x}", {"A": "y"}, "y"),
    ("${A-x}", {}, "x"),
    ("a${B}c", {}, "ac"),
])
def test_env_substitution_like_faas_cli(text, env, expected):
    assert substitute(text, env) == expected


@pytest.mark.parametrize("labels,needle", [
    ({"com.openfaas.scale.max": "6"}, "outside 1..5"),
    ({"com.openfaas.scale.min": "0"}, "outside 1..5"),
    ({"com.openfaas.scale.min": "3", "com.openfaas.scale.max": "2"}, "above"),
    ({"com.openfaas.scale.max": "many"}, "not an integer"),
    ({"com.openfaas.scale.type": "rps"}, "Pro label"),
    ({"com.openfaas.scale.target": "5"}, "Pro label"),
])
def test_ce_rejects(labels, needle):
    assert any(needle in e for e in ce_label_errors(labels))


def test_scale_to_zero_labels_are_accepted_because_the_plugin_acts_on_them():
    labels = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "5m"}
    assert ce_label_errors(labels) == []


@pytest.mark.parametrize("doc,needle", [
    ("functions: {}\n", "provider.name"),
    ("provider: {name: openfaas}\nfunctions: {}\n", "at least one"),
    ("provider: {name: openfaas}\nfunctions:\n  Bad_Name: {lang: x, handler: y, image: z}\n",
     "DNS-1123"),
    ("provider: {name: openfaas}\nfunctions:\n  f: {lang: x, handler: y}\n", "functions.f.image"),
    (("provider: {name: openfaas}\nfunctions:\n  f: {lang: x, handler: y, image: z, "
     "labels: {com.openfaas.scale.max: 10}}\n"), "functions.f.labels"),
    (("provider: {name: openfaas}\nfunctions:\n  f: {lang: x, handler: y, image: z, "
     "limits: {gpu: 1}}\n"), "functions.f.limits"),
    ("provider: [\n", "not valid YAML"),
])
def test_bad_stacks_name_the_field(tmp_path, doc, needle):
    p = tmp_path / "stack.yml"
    p.write_text(doc)
    with pytest.raises(StackError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        load_stack(p, {})


def test_template_files_are_what_faas_cli_expects():
    t = REPO / "template" / "quart-python"
    meta = yaml.safe_load((t / "template.yml").read_text())
    assert meta["language"] == "quart-python" and meta["fprocess"] == "python index.py"
    assert meta.get("handler_folder", "function") == "function" and meta["welcome_message"]
    for f in ("index.py", "requirements.txt", "Dockerfile", "function/handler.py",
              "function/requirements.txt"):
        assert (t / f).is_file(), f
    docker = (t / "Dockerfile").read_text()
    for needle in ("of-watchdog", 'mode="http"', 'upstream_url="http://127.0.0.1:5000"',
                   "USER app", "HEALTHCHECK", "COPY --chown=app:app function/", "AS ship",
                   "ARG WATCHDOG_VERSION=0.11.6"):  # the fwatchdog test_template_watchdog runs
        assert needle in docker, needle
    assert (t / "index.py").read_text().count("\n") < 120  # small, like python3-http


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shrinkwrap(tmp_path, handler_dir):
    """What `faas-cli build --shrinkwrap` lays out: template + handler copied into function/."""
    build = tmp_path / "build" / "fn"
    shutil.copytree(REPO / "template" / "quart-python", build)
    shutil.rmtree(build / "function")
    shutil.copytree(handler_dir, build / "function")
    return build


def _serve(build, env):
    port = _free_port()
    full = {**os.environ, **env, "QUART_LISTEN_PORT": str(port)}
    full.pop("QUART_HANDLER_DIR", None)
    proc = subprocess.Popen([sys.executable, "index.py"], cwd=build, env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            if requests.get(url + "/_/health", timeout=0.5).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("replica did not start")


def test_new_function_skeleton_serves(tmp_path):
    build = _shrinkwrap(tmp_path, REPO / "template" / "quart-python" / "function")
    proc, url = _serve(build, {"QUART_PRELOAD": ""})
    try:
        r = requests.post(url, data=b"x", timeout=5)
        assert r.status_code == 200 and "Hello" in r.text
    finally:
        proc.kill()
        proc.wait()


def test_stage_handler_serves_from_the_shrinkwrap_layout(tmp_path, minilm3):
    build = _shrinkwrap(tmp_path, REPO / "functions" / "stage")
    proc, url = _serve(build, {"QUART_MODEL_DIR": str(minilm3), "QUART_STAGE": "0",
                               "QUART_NEXT_FUNCTION": "x", "QUART_GATEWAY_URL": "http://127.0.0.1:9"})
    try:
        info = requests.get(url, timeout=5).json()
        assert info["stage"] == 0 and info["stages"] == 3
        r = requests.post(url, data=b"{oops", timeout=5)
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        r = requests.post(url, json={"inputs": ["hi"]}, timeout=30)
        assert r.status_code == 502 and r.json()["stage"] == 1  # no gateway at :9, cleanly said
        assert requests.get(url + "/_/health", timeout=5).ok
    finally:
        proc.kill()
        proc.wait()
