"""`quart-faas plan --gpus 8` from any directory: the seed's default files come from the
working directory, and where it has no simple_config.json, the example shipped with the
package is planned (its config and its requests)."""
from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import tomllib
from pathlib import Path

from planner import cli
from planner.cli import main
from tests.planner_helpers import EXAMPLES, REPO, chain_config, write

SHIPPED = Path(cli.__file__).resolve().parent / "examples"


def _log(folder: Path) -> dict:
    return json.loads((folder / "static_execution_log.json").read_text())


def test_plan_from_an_empty_directory_plans_the_shipped_example(tmp_path):
    exe = Path(sysconfig.get_path("scripts")) / "quart-faas"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([str(exe), "plan", "--gpus", "8"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "STATIC MODEL ASSIGNMENT (gswarm)" in r.stdout
    assert f"no simple_config.json in {tmp_path}" in r.stderr
    summary = _log(tmp_path)["summary"]
    assert summary["planner_input"] == str(SHIPPED / "simple_config.json")
    assert summary["total_requests"] == summary["completed_requests"] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static_execution_log.json",
                                                          "static_scheduler.log"]


def test_files_in_the_working_directory_win(tmp_path, monkeypatch, capsys):
    write(tmp_path / "simple_config.json", chain_config(2, 2))
    write(tmp_path / "simple_requests.yaml",
          {"requests": [{"workflow_id": "chain0"}, {"workflow_id": "chain1"}]})
    monkeypatch.chdir(tmp_path)
    assert main(["--gpus", "4"]) == 0
    assert "simple_config.json" not in capsys.readouterr().err
    summary = _log(tmp_path)["summary"]
    assert summary["planner_input"] == "simple_config.json"
    assert summary["total_requests"] == 2


def test_an_own_config_is_never_run_with_the_shipped_requests(tmp_path, monkeypatch, capsys):
    write(tmp_path / "simple_config.json", chain_config(2, 2))
    monkeypatch.chdir(tmp_path)
    assert main(["--gpus", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "simple_requests.yaml" in err, err


def test_own_requests_run_on_the_shipped_config(tmp_path, monkeypatch, capsys):
    first = json.loads((SHIPPED / "simple_config.json").read_text())["workflows"]
    write(tmp_path / "simple_requests.yaml", {"requests": [{"workflow_id": next(iter(first))}]})
    monkeypatch.chdir(tmp_path)
    assert main(["--gpus", "8"]) == 0
    assert _log(tmp_path)["summary"]["total_requests"] == 1


def test_the_example_is_package_data_and_the_same_as_examples_planner():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["planner"]
    for name in ("simple_config.json", "simple_requests.yaml"):
        assert any(Path("examples", name).match(pattern) for pattern in data), (name, data)
        assert (SHIPPED / name).read_bytes() == (EXAMPLES / name).read_bytes()
