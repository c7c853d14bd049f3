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


def pod_mode_env() -> dict[str, str]:
    """The guide's pod-mode switch: its ``export QUART_POD_WORKERS=...`` line."""
    (line,) = [ln for ln in guide().splitlines() if ln.startswith("export QUART_POD_WORKERS=")]
    return dict(w.split("=", 1) for w in shlex.split(line)[1:])


def deployed(extra_env: dict[str, str]) -> dict[str, dict]:
    """The bodies `faas-cli deploy` of the guide's `faas-cli up` line sends (with
    ``extra_env``) to a gateway that records them."""
    up = command("faas-cli up ")
    with FakeFaasNetes({}) as fake:
        env = {**os.environ, "REGISTRY": "ttl.sh/quart-faas-t", **extra_env}
        for k in ("QUART_POD_WORKERS", "QUART_POD_MAX_WORKERS", "QUART_POD_SECRETS",
                  "QUART_POD_SCRAPE"):
            env.setdefault(k, "")
        r = subprocess.run([str(openfaas_bin("faas-cli")), "deploy", *up[2:], "--gateway",
                            fake.url], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("Deployed. 202 ACCEPTED.") == 3
        return {b["service"]: b for b in (c.json() for c in fake.calls("POST"))}


def test_the_deploy_step_sends_env_secret_and_model_path():
    """`faas-cli up` = build, push, then the deploy that runs here against a gateway that
    records it: every stage keeps stack.yml's env, gains pod mode, the token and the scrape
    annotations, and points at the partition baked into the image."""
    (model_dir,) = re.findall(r"^export QUART_MODEL_DIR=(\S+)$", guide(), re.MULTILINE)
    bodies = deployed({"QUART_MODEL_DIR": model_dir, **pod_mode_env()})
    assert sorted(bodies) == ["minilm-stage-0", "minilm-stage-1", "minilm-stage-2"]
    for i, (_, b) in enumerate(sorted(bodies.items())):
        e = b["envVars"]
        assert e["QUART_STAGE"] == str(i) and e["QUART_STAGES"] == "3"
        assert e["QUART_MODEL_DIR"] == "/home/app/function/models/minilm-3"
        assert e["QUART_POD_WORKERS"] == "1" and e["QUART_POD_MAX_WORKERS"] == "4"
        assert int(e["max_inflight"]) >= int(e["QUART_POD_MAX_WORKERS"])  # every worker busy
        assert b["secrets"] == ["quart-control-token"]
        assert b["image"].startswith("ttl.sh/quart-faas-t/")
        a = b["annotations"]
        assert a["com.openfaas.quart.pipeline"] == "minilm"
        assert (a["prometheus.io.scrape"], a["prometheus.io.port"], a["prometheus.io.path"]) \
            == ("true", "8082", "/_/quart/metrics")  # the zygote's control port
    # the partition step writes where that path is inside the image (function/ = the handler)
    part = command("quart-faas partition ")
    out = part[part.index("--out") + 1]
    assert out.startswith("functions/stage/") and model_dir == \
        "/home/app/function/" + out.removeprefix("functions/stage/")


def test_without_the_switch_stack_yml_is_as_before():
    """Unset, the pod-mode variables leave every stage one process per pod, with no secret
    to create first and nothing to scrape; and `quart-faas up` reads the stack the same way."""
    from contracts.stack import load_stack

    for name, b in deployed({}).items():
        assert not b.get("secrets"), name
        assert not b["envVars"].get("QUART_POD_WORKERS"), name
        assert b["annotations"]["prometheus.io.scrape"] == "false", name
    stack = load_stack(REPO / "stack.yml", {})
    for f in stack.functions.values():
        assert f.secrets == [] and f.environment["QUART_POD_WORKERS"] == "", f.name
        assert f.annotations["prometheus.io.scrape"] == "false"
    on = load_stack(REPO / "stack.yml", pod_mode_env())
    assert all(f.secrets == ["quart-control-token"] for f in on.functions.values())


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
