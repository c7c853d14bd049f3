"""``quart-faas bench``: one entry point for the studies and micro-benchmarks, and every
command the docs show still names something that exists."""
from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from benchmark.studies import BY_NAME, DEFAULT, STUDIES
from quart_faas.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "Makefile", REPO / "benchmark" / "RESULTS.md",
        *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "examples").rglob("*.md"))]


def test_no_name_lists_every_study_one_line_each(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in out[:len(STUDIES)]]
    assert listed == [s.name for s in STUDIES]
    assert [line.split()[0] for line in out if line.endswith("[default]")] == \
        [s.name for s in DEFAULT]


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.name)
def test_every_study_has_a_main(study):
    assert callable(importlib.import_module(study.module).main)


def test_make_bench_runs_the_default_set_through_it():
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)[1]
    assert recipe.split() == ["$(VENV)/bin/quart-faas", "bench", "--default"]
    # what `make bench` ran before there was one entry point
    assert [(s.name, s.default_args) for s in DEFAULT] == [
        ("pipeline_overhead", ()), ("scaleup", ()), ("pool", ()),
        ("control_cycle", ("--stages", "1000")), ("decoder", ())]


def test_a_study_runs_through_it_with_its_own_arguments(capsys):
    args = ["--nodes", "4", "--pipelines", "2", "--stages", "2", "--periods", "10",
            "--seeds", "1"]
    assert main(["bench", "placement", *args]) == 0
    out = capsys.readouterr().out
    assert "cache-aware" in out and "least-loaded" in out
    with pytest.raises(SystemExit):
        main(["bench", "placement", "--help"])
    assert capsys.readouterr().out.startswith("usage: quart-faas bench placement")


def test_unknown_study_is_an_error_that_lists_them(capsys):
    assert main(["bench", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no study 'nosuch'" in err and "pipeline_overhead" in err


def _commands(pattern: str) -> list[tuple[str, str]]:
    return [(p.name, m) for p in DOCS for m in re.findall(pattern, p.read_text())]


@pytest.mark.parametrize("doc, module", _commands(r"python -m ([A-Za-z_][\w.]*)"))
def test_documented_python_dash_m_modules_exist(doc, module):
    assert importlib.util.find_spec(module) is not None, f"{doc}: python -m {module}"


@pytest.mark.parametrize("doc, name", _commands(r"quart-faas bench ([a-z][\w-]*)"))
def test_documented_studies_exist(doc, name):
    assert name.replace("-", "_") in BY_NAME, f"{doc}: quart-faas bench {name}"
