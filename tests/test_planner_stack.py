"""The planner on our own stack.yml (--stack/--out), its generator and entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from planner.cli import main
from planner.generate import main as generate_main
from planner.spec import PlanInputError, parse_config, parse_requests
from planner.stackfile import emit_constraints, load_stack
from tests.planner_helpers import EXAMPLES, REPO, STACK, write

# --------------------------------------------------------------------------- our own pipelines


def test_stack_plans_the_minilm_pipeline_and_writes_constraints(tmp_path, capsys):
    out = tmp_path / "planned" / "stack.yml"
    rc = main(
        [
            "--stack",
            str(STACK),
            "--gpus",
            "3",
            "--gpus-per-server",
            "3",
            "--out",
            str(out),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "Server efficiency: 100.0%" in text and "Cross-server communications: 0" in text
    before = yaml.safe_load(STACK.read_text())
    after = yaml.safe_load(out.read_text())
    stages = [f"minilm-stage-{k}" for k in range(3)]
    assert set(after["functions"]) == set(before["functions"]) == set(stages)
    for name in stages:
        assert after["functions"][name]["constraints"] == ["kubernetes.io/hostname=server-0"]
        rest = {k: v for k, v in after["functions"][name].items() if k != "constraints"}
        assert rest == before["functions"][name]
    assert {k: v for k, v in after.items() if k != "functions"} == {
        k: v for k, v in before.items() if k != "functions"
    }
    assert after["provider"]["gateway"] == "${OPENFAAS_URL:-http://127.0.0.1:8080}"
    written = out.read_text()
    assert "# The MiniLM pipeline" in written and "<<: *stage_env" in written  # edited in place
    log = json.loads((tmp_path / "static_execution_log.json").read_text())
    assert log["summary"]["total_requests"] == 100
    assert {e["model_name"] for e in log["executions"]} == set(stages)
    assert log["constraints"] == {n: ["kubernetes.io/hostname=server-0"] for n in stages}


def test_stack_split_over_servers_and_node_names(tmp_path):
    out = tmp_path / "stack.yml"
    rc = main(
        [
            "--stack",
            str(STACK),
            "--gpus",
            "4",
            "--gpus-per-server",
            "2",
            "--out",
            str(out),
            "--node-names",
            "gpu-a,gpu-b",
            "--constraint-key",
            "kubernetes.io/hostname",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    after = yaml.safe_load(out.read_text())
    nodes = {after["functions"][f"minilm-stage-{k}"]["constraints"][0] for k in range(3)}
    assert nodes <= {"kubernetes.io/hostname=gpu-a", "kubernetes.io/hostname=gpu-b"}
    log = json.loads((tmp_path / "static_execution_log.json").read_text())
    assert log["summary"]["server_efficiency"] == 0.0  # 3 stages never fit a 2-slot server
    assert log["summary"]["cross_server_communications"] >= 100


def test_emit_constraints_replaces_existing_and_keeps_unplanned(tmp_path):
    text = STACK.read_text().replace(
        "functions:\n",
        'functions:\n  other:\n    image: x\n    constraints:\n    - "zone=a"\n\n',
        1,
    )
    text = text.replace(
        "    requests: *stage_requests\n",
        '    requests: *stage_requests\n    constraints:\n      - "old=1"\n',
        1,
    )
    path = write(tmp_path / "stack.yml", text)
    stack = load_stack(path)
    assert stack.unplanned == ("other",)
    wanted = {f"minilm-stage-{k}": [f"node=n{k}"] for k in range(3)}
    new, in_place = emit_constraints(stack, wanted)
    assert in_place
    data = yaml.safe_load(new)
    assert data["functions"]["other"]["constraints"] == ["zone=a"]
    for name, cons in wanted.items():
        assert data["functions"][name]["constraints"] == cons
    assert "old=1" not in new



def test_stack_variables_expand_as_quart_faas_up_expands_them(tmp_path, capsys, monkeypatch):
    """One stack.yml reader: ``${VAR:-default}`` in an annotation means to the planner what
    it means to ``quart-faas up`` (the planner used to read the text unexpanded and refuse
    ``${STAGES:-3}`` as "not an integer"); the stack written back keeps the variable."""
    from contracts.stack import load_stack as deploy_load_stack

    text = STACK.read_text().replace(
        'com.openfaas.quart.stages: "3"', 'com.openfaas.quart.stages: "${STAGES:-3}"'
    )
    assert text.count("${STAGES:-3}") == 3
    path = write(tmp_path / "stack.yml", text)
    monkeypatch.delenv("STAGES", raising=False)
    out = tmp_path / "planned.yml"
    rc = main(["--stack", str(path), "--gpus", "3", "--out", str(out),
               "--output-dir", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    assert out.read_text().count("${STAGES:-3}") == 3
    deployed = deploy_load_stack(path, {})
    planned = load_stack(path, env={})
    assert [f.annotations["com.openfaas.quart.stages"] for f in deployed.functions.values()] \
        == ["3", "3", "3"]
    assert len(planned.config.workflows["minilm"].nodes) == 3
    with pytest.raises(PlanInputError, match=r"no function for stage\(s\) \[3\]"):
        load_stack(path, env={"STAGES": "4"})

@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda t: t.replace('com.openfaas.quart.stage: "1"', 'com.openfaas.quart.stage: "0"'),
            (
                "stack.yml: functions.minilm-stage-1.annotations.com.openfaas.quart.stage: "
                "stage 0 of 'minilm' is also function 'minilm-stage-0'"
            ),
        ),
        (
            lambda t: t.replace('com.openfaas.quart.stage: "2"', 'com.openfaas.quart.stage: "7"'),
            "stack.yml: functions.minilm-stage-2.annotations.com.openfaas.quart.stage: "
            "stage 7 is outside 0..2",
        ),
        (
            lambda t: t.replace('com.openfaas.quart.stage: "2"', "com.openfaas.quart.stage: two"),
            "stack.yml: functions.minilm-stage-2.annotations.com.openfaas.quart.stage: "
            "must be an integer",
        ),
        (
            lambda t: t.replace("com.openfaas.quart.pipeline", "com.example.x"),
            "stack.yml: functions: no function carries the com.openfaas.quart.pipeline annotation",
        ),
    ],
)
def test_bad_stack_is_a_clear_error(tmp_path, capsys, edit, expected):
    path = write(tmp_path / "stack.yml", edit(STACK.read_text()))
    assert main(["--stack", str(path), "--gpus", "3", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


# ----------------------------------------------------------------------- generator and entry point


def test_generator_writes_requests_the_planner_reads(tmp_path, capsys):
    out = tmp_path / "req.yaml"
    assert (
        generate_main(
            [
                "--config",
                str(EXAMPLES / "simple_config.json"),
                "--count",
                "25",
                "--seed",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "--gpus",
                "8",
                "--config",
                str(EXAMPLES / "simple_config.json"),
                "--requests",
                str(out),
                "--mode",
                "online",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    log = json.loads((tmp_path / "static_execution_log.json").read_text())
    assert log["summary"]["completed_requests"] == 25 and log["summary"]["mode"] == "online"
    again = tmp_path / "again.yaml"
    generate_main(
        [
            "--config",
            str(EXAMPLES / "simple_config.json"),
            "--count",
            "25",
            "--seed",
            "4",
            "--out",
            str(again),
        ]
    )
    assert again.read_text().replace("again.yaml", "req.yaml") == out.read_text()


def test_shipped_requests_match_the_shipped_config():
    config = parse_config(
        json.loads((EXAMPLES / "simple_config.json").read_text()), "simple_config.json"
    )
    requests = parse_requests(
        yaml.safe_load((EXAMPLES / "simple_requests.yaml").read_text()), config
    )
    assert len(requests) == 300 and all(r.timestamp is not None for r in requests)


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for flag in (
        "--gpus",
        "--gpus-per-server",
        "--mode",
        "--config",
        "--requests",
        "--simulate",
        "--assign",
        "--stack",
        "--out",
    ):
        assert flag in proc.stdout


def test_input_error_type_names_source_and_field():
    err = PlanInputError("requests.yaml", "workflows[2].models[0]", "unknown model 'x'")
    assert str(err) == "requests.yaml: workflows[2].models[0]: unknown model 'x'"


def test_stack_with_config_overrides_and_timestamps_with_offsets(tmp_path):
    cfg = write(
        tmp_path / "over.json",
        {
            "models": {"minilm-stage-1": {"inference_time_mean": 0.5}},
            "workflows": {},
            "network": {"inter_server_transfer_s": 1.0},
        },
    )
    req = write(
        tmp_path / "req.yaml",
        {
            "requests": [
                {"workflow_id": "minilm", "timestamp": "2025-01-01T01:00:00+01:00"},
                {"workflow_id": "minilm", "timestamp": "2025-01-01T00:00:10"},
            ]
        },
    )
    rc = main(
        ["--stack", str(STACK), "--config", str(cfg), "--requests", str(req), "--gpus", "3"]
        + ["--mode", "online", "--output-dir", str(tmp_path)]
    )
    assert rc == 0
    log = json.loads((tmp_path / "static_execution_log.json").read_text())
    # 0.05 + 0.5 + 0.05 s per request on one server (intra transfer 0), 10 s apart: no queueing
    assert log["summary"]["avg_request_response_time"] == pytest.approx(0.6)
    assert log["summary"]["makespan"] == pytest.approx(10.6)
    bad = write(tmp_path / "bad.json", {"models": {"nope": {}}, "workflows": {}})
    assert main(["--stack", str(STACK), "--config", str(bad), "--gpus", "3"]) == 2
