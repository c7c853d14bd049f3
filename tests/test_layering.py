"""Imports flow one way between packages, and no two modules import each other.

The rule (docs/architecture.md): packages sit in layers, contracts at the bottom, checks at
the top; a package imports only packages of lower layers, never one of its own layer or
above, and nothing imports tests/.  Within and across packages there is no import cycle
between modules, counting imports inside functions too (a lazy import that closes a
cycle only moves the failure to run time).  The folders that faas-cli ships alone into
a function image import nothing of ours when they load.
"""
from __future__ import annotations

import textwrap

import pytest

from tests import layering


@pytest.fixture(scope="module")
def graph() -> layering.Graph:
    return layering.build()


def test_every_package_has_a_layer():
    assert sorted(set(layering.packages()) - set(layering.RANK)) == []


def test_no_import_goes_sideways_or_up(graph):
    assert layering.back_edges(graph) == []


def test_no_import_cycle_between_modules(graph):
    assert layering.cycles(graph.edges) == []


def test_the_folders_that_ship_alone_import_nothing_of_ours(graph):
    assert layering.self_contained_violations(graph) == []


def _write(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def test_the_checker_finds_back_edges_and_cycles(tmp_path):
    """On a small tree with the faults this repository had: a lower layer importing a
    higher one, two modules importing each other through a late import (as
    benchmark/report/files.py and plots.py did), a relative-import cycle, and a
    handler folder importing a package at load time."""
    _write(tmp_path, {
        "contracts/__init__.py": "",
        "contracts/names.py": "from keys_manager import cache\n",
        "keys_manager/__init__.py": "",
        "keys_manager/cache.py": "import contracts.names\n",
        "benchmark/__init__.py": "",
        "benchmark/report/__init__.py": "",
        "benchmark/report/files.py": "def write():\n    from benchmark.report.plots import p\n",
        "benchmark/report/plots.py": "from benchmark.report.files import write\np = 1\n",
        "benchmark/a.py": "from . import b\n",
        "benchmark/b.py": "from .a import x\n",
        "functions/__init__.py": "",
        "functions/stage/__init__.py": "",
        "functions/stage/bert.py": ("from .codec import C\nimport contracts.names\n"
                                    "def load():\n    import keys_manager.cache\n"),
        "functions/stage/codec.py": "C = 1\n",
        "gateway_plugin/__init__.py": "from local_provider import x\n",
        "local_provider/__init__.py": "from tests import helper\n",
    })
    g = layering.build(tmp_path)
    assert layering.back_edges(g) == [
        "contracts.names -> keys_manager.cache",
        "gateway_plugin -> local_provider",
        "local_provider -> tests.helper",
    ]
    assert layering.cycles(g.edges) == [
        ["benchmark.a", "benchmark.b"],
        ["benchmark.report.files", "benchmark.report.plots"],
        ["contracts.names", "keys_manager.cache"],
    ]
    assert layering.self_contained_violations(g, tmp_path) == [
        "functions/stage/bert.py -> contracts.names"]  # the late keys_manager import is fine


def test_the_architecture_page_shows_the_layers_in_force():
    """docs/architecture.md's diagram is generated from this graph (scripts/architecture.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "architecture", layering.REPO / "scripts" / "architecture.py")
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)
    page = (layering.REPO / "docs" / "architecture.md").read_text()
    assert arch.mermaid(layering.build()) in page, "stale: run python scripts/architecture.py"
    for name, pkgs in layering.LAYERS:
        assert name in page and all(f"`{p}/`" in page for p in pkgs)
