"""The Makefile on a fresh checkout: `make clean` works without a venv, `make setup` picks a
Python the pins can install on and says in one sentence when there is none."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

FILES = ("Makefile", "pyproject.toml", "requirements.lock", "scripts")


def checkout(tmp_path: Path) -> Path:
    """The files make reads, as a fresh clone has them: no .venv, no .quart."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy(src, root / name)
    return root


def make(root: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path} if path else None
    return subprocess.run(["make", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def tools_only(tmp_path: Path, pythons: dict[str, int]) -> str:
    """A PATH with make's helpers and fake pythons: name -> exit code of `name -c ''` (127 is a
    pyenv shim of a version not selected)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("make", "cat", "sha256sum", "cut"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    for name, code in pythons.items():
        (bin_ / name).write_text(f"#!/bin/sh\nexit {code}\n")
        (bin_ / name).chmod(0o755)
    return str(bin_)


def test_clean_works_on_a_fresh_checkout(tmp_path):
    root = checkout(tmp_path)
    (root / "build").mkdir()
    r = make(root, "clean")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to stop" in r.stdout
    assert not (root / "build").exists()


def test_clean_stops_what_up_started_first(tmp_path):
    root = checkout(tmp_path)
    cli = root / ".venv" / "bin" / "quart-faas"
    cli.parent.mkdir(parents=True)
    cli.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'called'}\n")
    cli.chmod(0o755)
    (root / ".quart").mkdir()
    assert make(root, "clean").returncode == 0
    assert (tmp_path / "called").read_text().split() == ["down"]
    assert not (root / ".quart").exists()


def test_clean_keeps_the_records_of_services_it_cannot_stop(tmp_path):
    root = checkout(tmp_path)
    (root / ".quart").mkdir()
    r = make(root, "clean")
    assert r.returncode != 0 and "make setup, then make down" in r.stderr
    assert (root / ".quart").is_dir()


@pytest.mark.parametrize("pythons, picked", [
    ({"python3.11": 0, "python3.12": 0, "python3.13": 0}, "python3.11"),
    ({"python3.11": 127, "python3.12": 0, "python3.13": 0}, "python3.13"),
    ({"python3.12": 0, "python3": 0}, "python3.12"),
    ({"python3.13": 127, "python3": 0}, "python3"),
], ids=["3.11-first", "newest-that-runs", "3.12", "python3"])
def test_setup_picks_the_python(tmp_path, pythons, picked):
    root = checkout(tmp_path)
    r = make(root, "-n", "-B", "setup", path=tools_only(tmp_path, pythons))
    assert r.returncode == 0, r.stderr
    assert f"/bin/{picked} scripts/check_python.py" in r.stdout


def test_setup_without_a_python_says_what_it_needs(tmp_path):
    root = checkout(tmp_path)
    r = make(root, "setup", path=tools_only(tmp_path, {"python3.12": 127}))
    assert r.returncode != 0
    assert "no Python found: Quart-FaaS needs python3.11, python3.12 or python3.13" in r.stderr
    assert not (root / ".venv").exists()


def check_python(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "scripts" / "check_python.py")],
                          capture_output=True, text=True, timeout=120, check=False)


def test_check_python_accepts_this_python_and_the_pinned_torch():
    r = check_python(REPO)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_check_python_refuses_a_version_outside_requires_python(tmp_path):
    root = checkout(tmp_path)
    pyproject = root / "pyproject.toml"
    minor = sys.version_info[1]
    pyproject.write_text(pyproject.read_text().replace(
        'requires-python = ">=3.11,<3.14"', f'requires-python = ">=3.{minor + 1},<3.{minor + 3}"'))
    r = check_python(root)
    assert r.returncode == 1
    assert r.stderr.startswith(f"make: Quart-FaaS needs Python 3.{minor + 1} or 3.{minor + 2} "
                               f"(requires-python >=3.{minor + 1},<3.{minor + 3}) and found "
                               f"Python 3.{minor} at ")
    assert len(r.stderr.strip().splitlines()) == 1


def test_check_python_refuses_a_torch_pin_without_a_wheel(tmp_path):
    root = checkout(tmp_path)
    lock = root / "requirements.lock"
    lock.write_text("\n".join("torch==0.0.1" if ln.startswith("torch==") else ln
                              for ln in lock.read_text().splitlines()) + "\n")
    r = check_python(root)
    assert r.returncode == 1
    assert r.stderr.startswith("make: requirements.lock pins torch==0.0.1 and pip finds no "
                               "wheel of it for Python 3.")
    assert "make PYTHON=/path/to/python3.11" in r.stderr


def _recording_venv(root: Path, log: Path, failing: str = "") -> None:
    """.venv/bin/{ruff,mypy,python} that append their arguments to ``log``; ``failing``
    exits 1 (a lint finding)."""
    bin_ = root / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for tool in ("ruff", "mypy", "python"):
        code = 1 if tool == failing else 0
        (bin_ / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit {code}\n')
        (bin_ / tool).chmod(0o755)


def test_make_test_runs_lint_first(tmp_path):
    """`make test` (what CI runs) is ruff over the tree, then mypy, then the suite."""
    root, log = checkout(tmp_path), tmp_path / "calls"
    _recording_venv(root, log)
    r = make(root, "-o", "setup", "test")  # setup installs the real venv: not here
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    assert calls[:2] == ["ruff check .", "mypy "] and len(calls) == 3
    assert calls[2].startswith("python -m pytest -q")


@pytest.mark.parametrize("failing", ["ruff", "mypy"])
def test_a_lint_finding_fails_make_test_before_the_suite(tmp_path, failing):
    root, log = checkout(tmp_path), tmp_path / "calls"
    _recording_venv(root, log, failing)
    r = make(root, "-o", "setup", "test")
    assert r.returncode != 0
    assert not any(ln.startswith("python") for ln in log.read_text().splitlines())
