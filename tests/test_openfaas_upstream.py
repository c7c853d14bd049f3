"""faas-cli against the upstream OpenFaaS gateway in front of our provider, and the same
suite against our embedded gateway: the MiniLM pipeline of stack.yml, real binaries, real
weights, one deploy per gateway.

upstream: ``quart-faas serve --role provider``; the real gateway (own network namespace,
          Prometheus scraping it); ``quart-faas build`` then ``faas-cli deploy -f stack.yml``
          from the repository root.
embedded: ``quart-faas serve`` (gateway + provider); ``faas-cli up --shrinkwrap --skip-push``
          in a copy of the project (faas-cli's own build output is the image).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests
import torch
from openfaas_env import (
    PASSWORD,
    REPO,
    USER,
    FaasCli,
    openfaas_bin,
    serve,
    start_upstream_gateway,
    write_credentials,
)
from test_provider_helpers import pid_alive, wait_for

from functions.stage.bert import Monolith
from tests import pipeline_env
from tests.conftest import SENTENCES

pytestmark = pytest.mark.slow
FN = ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]
FOLLOW_S = 4  # QUART_LOG_FOLLOW_S of the provider: `faas-cli logs NAME` (follow) ends by then


@dataclass
class Setup:
    kind: str
    cli: FaasCli
    gateway: str
    state: Path  # the provider's state dir
    cwd: Path  # where faas-cli runs: the project
    provider: str

    def replica_pids(self) -> list[int]:
        """The serving replicas, as the provider lists them (zygotes are not replicas)."""
        r = requests.get(self.provider + "/system/quart/stats", auth=(USER, PASSWORD), timeout=5)
        r.raise_for_status()
        return sorted(i["pid"] for fn in FN for i in r.json().get(fn, {}).get("instances", []))


def _project_copy(tmp: Path) -> Path:
    """stack.yml with its template and handler, as a user's project folder."""
    proj = tmp / "project"
    shutil.copytree(REPO / "template" / "quart-python", proj / "template" / "quart-python")
    shutil.copytree(REPO / "functions" / "stage", proj / "functions" / "stage",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "stack.yml", proj / "stack.yml")
    return proj


@pytest.fixture(scope="module", params=["upstream", "embedded"])
def setup(request: pytest.FixtureRequest, minilm3: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    bins = openfaas_bin()
    tmp = tmp_path_factory.mktemp(request.param)
    creds = write_credentials(tmp / "credentials")
    state = tmp / "state"
    env = {"secret_mount_path": str(creds), "QUART_LOG_FOLLOW_S": str(FOLLOW_S)}
    stops: list[Callable[[], object]] = []
    try:
        if request.param == "upstream":
            cwd = REPO
            prov, urls = serve(state, "provider", env)
            stops.append(prov.stop)
            gw = start_upstream_gateway(bins, urls["provider_url"], creds, tmp)
            stops.append(gw.stop)
            gateway = gw.url
        else:
            cwd = _project_copy(tmp)
            prov, urls = serve(state, "all", env, cwd=cwd)
            stops.append(prov.stop)
            gateway = urls["gateway_url"]
        cli = FaasCli(bins / "faas-cli", gateway, tmp / "faas-cli",
                      {"QUART_MODEL_DIR": str(minilm3), "QUART_GATEWAY_URL": gateway})
        cli.login()
        if request.param == "upstream":
            r = subprocess.run([sys.executable, "-m", "quart_faas.cli", "build", "-f", "stack.yml",
                                "--filter", "minilm-*", "--state-dir", str(state)], cwd=REPO,
                               capture_output=True, text=True, check=False)
            assert r.returncode == 0, r.stderr
            out = cli("deploy", "-f", "stack.yml", "--filter", "minilm-*").stdout
        else:
            out = cli("up", "--shrinkwrap", "--skip-push", "-f", "stack.yml", "--filter",
                      "minilm-*", cwd=cwd).stdout
        assert out.count("Deployed. 202") == 3, out
        for fn in FN:
            cli("ready", fn, "--attempts", "480", "--interval", "500ms")
        yield Setup(request.param, cli, gateway, state, cwd, urls["provider_url"])
    finally:
        for stop in reversed(stops):
            stop()
    for fn in FN:
        assert pipeline_env.replica_pids(fn, gateway) == [], f"{fn} replicas left behind"


def test_version_names_gateway_and_provider(setup: Setup) -> None:
    out = setup.cli("version", "--warn-update=false").stdout
    assert re.search(r"Gateway\s+uri:\s+" + re.escape(setup.gateway), out), out
    assert re.search(r"Provider\s+name:\s+quart-local-provider\s+orchestration:\s+process\s+"
                     r"version:\s+\d+\.\d+\.\d+", out), out
    if setup.kind == "embedded":  # ours reports our release; upstream's its own build
        assert re.search(r"Gateway\s+uri:\s+\S+\s+version:\s+\d+\.\d+\.\d+", out), out


def test_list_and_describe(setup: Setup) -> None:
    out = setup.cli("list", "-v").stdout
    for fn in FN:
        row = next((line for line in out.splitlines() if line.startswith(fn + " ")), "")
        assert "/minilm-stage:0.1.0" in row and re.search(r"\s1\s", row), out
    out = setup.cli("describe", FN[1]).stdout
    for needle in ("Status:             Ready", "Replicas:           1",
                   "Available Replicas: 1", "Image:              ttl.sh/quart-faas/minilm-stage",
                   "QUART_STAGE: 1", "com.openfaas.quart.pipeline: minilm"):
        assert needle in out, out


def test_invoke_equals_the_in_process_model(setup: Setup, minilm3: Path, st_reference) -> None:
    r = setup.cli("invoke", FN[0], "--content-type", "application/json",
                  stdin=json.dumps({"inputs": SENTENCES}))
    body = json.loads(r.stdout)
    assert body["model"] == "all-MiniLM-L6-v2" and body["stages"] == 3
    emb = torch.tensor(body["embeddings"])
    assert emb.shape == (len(SENTENCES), 384)
    assert (emb - Monolith(minilm3).encode(SENTENCES)).abs().max().item() <= 1e-5
    assert (emb - st_reference).abs().max().item() <= 1e-5

    def counted() -> bool:  # upstream: from Prometheus, which scrapes the gateway every 1 s
        row = next(line for line in setup.cli("list").stdout.splitlines()
                   if line.startswith(FN[0] + " "))
        return int(row.split()[1]) >= 1

    wait_for(counted, 30, 0.5, what="an invocation count in faas-cli list")


def test_logs(setup: Setup) -> None:
    lines = [json.loads(x) for x in setup.cli("logs", FN[0], "--tail=false", "-o", "json")
             .stdout.splitlines() if x.strip()]
    assert lines, "no log lines"
    for m in lines:
        assert m["name"] == FN[0] and m["namespace"] == "openfaas-fn"
        assert m["instance"] == f"{FN[0]}-0"
        datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))
    last = setup.cli("logs", FN[0], "--tail=false", "--lines", "1").stdout.splitlines()
    assert len(last) == 1 and last[0].endswith(lines[-1]["text"].rstrip()), last
    t0 = time.monotonic()
    followed = setup.cli("logs", FN[0], "--lines", "1").stdout  # follow: ends by itself
    assert time.monotonic() - t0 < FOLLOW_S + 10
    assert lines[-1]["text"].rstrip() in followed


def test_secrets(setup: Setup) -> None:
    cli = setup.cli
    assert "Created" in cli("secret", "create", "qf-token", "--from-literal=s3cr3t").stdout
    again = cli("secret", "create", "qf-token", "--from-literal=other").stdout
    assert 'secret with the name "qf-token" already exists' in again  # our 409
    stored = setup.state / "secrets" / "qf-token"
    assert stored.read_text() == "s3cr3t"
    cli("secret", "create", "qf-token", "--from-literal=new", "--replace")
    cli("secret", "create", "qf-other", stdin="from stdin")
    listed = cli("secret", "list").stdout.split()
    assert {"qf-token", "qf-other"} <= set(listed)
    assert stored.read_text() == "new"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    cli("secret", "remove", "qf-token")
    cli("secret", "remove", "qf-other")
    assert "No secrets found" in cli("secret", "list").stdout
    assert not stored.exists()


def test_remove(setup: Setup) -> None:
    pids = setup.replica_pids()
    assert len(pids) == 3, pids
    for fn in FN:
        assert "Removing old function" in setup.cli("remove", fn).stdout
    wait_for(lambda: not any(fn in setup.cli("list").stdout for fn in FN), 20,
             what="functions gone from faas-cli list")
    wait_for(lambda: not any(pid_alive(p) for p in pids), 30, what="replicas stopped")
    missing = setup.cli("describe", FN[0], check=False)
    assert missing.returncode != 0
    assert os.path.isdir(setup.state)
