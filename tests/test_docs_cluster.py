"""docs/cluster.md: its commands do what it says where they can run here (faas-cli against a
recording faas-netes stand-in, template pull from this checkout), and it says what it must
about the OpenFaaS chart and about what was run on a real cluster."""
from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from functions.stage.config import StageConfig, require_model
from tests.conftest import REPO, openfaas_bin
from tests.fake_faas_netes import FakeFaasNetes

GUIDE = REPO / "docs" / "cluster.md"


def guide() -> str:
    return GUIDE.read_text()


def command(prefix: str) -> list[str]:
    """The one command line of the guide that starts with ``prefix``, as argv."""
    (line,) = [ln for ln in guide().splitlines() if ln.startswith(prefix)]
    return shlex.split(line.split(" #")[0])


def test_the_deploy_step_sends_env_secret_and_model_path():
    """`faas-cli up` = build, push, then the deploy that runs here against a gateway that
    records it: every stage keeps stack.yml's env, gains pod mode and the token, and points
    at the partition baked into the image."""
    up = command("faas-cli up ")
    (model_dir,) = re.findall(r"^export QUART_MODEL_DIR=(\S+)$", guide(), re.MULTILINE)
    with FakeFaasNetes({}) as fake:
        env = {**os.environ, "QUART_MODEL_DIR": model_dir, "REGISTRY": "ttl.sh/quart-faas-t"}
        r = subprocess.run([str(openfaas_bin("faas-cli")), "deploy", *up[2:], "--gateway",
                            fake.url], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("Deployed. 202 ACCEPTED.") == 3
        bodies = {b["service"]: b for b in (c.json() for c in fake.calls("POST"))}
    assert sorted(bodies) == ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]
    for i, (_, b) in enumerate(sorted(bodies.items())):
        e = b["envVars"]
        assert e["QUART_STAGE"] == str(i) and e["QUART_STAGES"] == "3"
        assert e["QUART_MODEL_DIR"] == "/home/app/function/models/minilm-3"
        assert e["QUART_POD_WORKERS"] == "1" and e["QUART_POD_MAX_WORKERS"] == "4"
        assert b["secrets"] == ["quart-control-token"]
        assert b["image"].startswith("ttl.sh/quart-faas-t/")
        assert b["annotations"]["com.openfaas.quart.pipeline"] == "minilm"
    # the partition step writes where that path is inside the image (function/ = the handler)
    part = command("quart-faas partition ")
    out = part[part.index("--out") + 1]
    assert out.startswith("functions/stage/") and model_dir == \
        "/home/app/function/" + out.removeprefix("functions/stage/")


def test_template_pull_from_a_clone(tmp_path):
    """`faas-cli template pull` takes a local clone (not a file:// URL)."""
    pull = command("faas-cli template pull ")
    assert "YOUR-ORG" not in " ".join(pull)
    r = subprocess.run([str(openfaas_bin("faas-cli")), "template", "pull", str(REPO)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Wrote 1 template(s) : [quart-python]" in r.stdout + r.stderr
    assert (tmp_path / "template" / "quart-python" / "index.py").is_file()


def test_a_stage_without_its_model_fails_as_the_guide_says(tmp_path):
    cfg = StageConfig.from_env({"QUART_MODEL_DIR": str(tmp_path / "none"), "QUART_STAGE": "2"})
    with pytest.raises(SystemExit) as e:
        require_model(cfg, {"QUART_MODEL_DIR": str(tmp_path / "none")})
    quoted = re.search(r"`(quart stage N: no partitioned model to serve: )\.\.\.`", guide())
    assert quoted and str(e.value).startswith(quoted[1].replace("N", "2"))


@pytest.mark.parametrize("must", [
    "Nothing in this guide has been run on a\nreal Kubernetes cluster",
    "Everything below the Kubernetes API runs for real in `make test`",
    "`openfaas-pods` job",
    "Community Edition pulls public images only",
    "`__inputs`",
    "QUART_ACTUATOR=kubernetes",
    "pods/resize",
])
def test_the_guide_says(must):
    assert must in guide()


@pytest.mark.parametrize("never", ["kubernetes-pods", "YOUR-ORG", "does not apply",
                                   "What it does **not** do on faas-netes: make replicas"])
def test_the_guide_no_longer_says(never):
    assert never not in guide()
