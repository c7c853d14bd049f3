"""Static workflow-locality planner (planner, seed 002): plans, metrics, logs, bad input.

Everything runs in-process on small workloads: no network, no model weights.
"""

from __future__ import annotations

import json

import pytest

from planner import analyse, build_workload, make_plan, simulate, summarise
from planner.assign import STRATEGIES, Plan, server_caps
from planner.choose import choose_gswarm
from planner.cli import main
from planner.spec import parse_config, parse_requests
from planner.workload import generate_requests
from tests.planner_helpers import EXAMPLES, chain_config, check_layout, write

# --------------------------------------------------------------------------- hand-worked simulation


@pytest.mark.parametrize(
    "placement, latency, se, csc",
    [
        # a (2 s) -> b (3 s), both on server 0: 2 + intra 0.1 + 3
        ({"a": 0, "b": 0}, 5.1, 100.0, 0),
        # a on server 0, b on server 1: 2 + inter 0.5 + 3
        ({"a": 0, "b": 1}, 5.5, 0.0, 1),
    ],
)
def test_simulator_hand_worked(placement, latency, se, csc):
    from planner.assign import Instance

    config = parse_config(
        {
            "models": {"a": {"inference_time_mean": 2.0}, "b": {"inference_time_mean": 3.0}},
            "workflows": {
                "w": {
                    "nodes": [{"id": "x", "model": "a"}, {"id": "y", "model": "b"}],
                    "edges": [{"from": "x", "to": "y"}],
                }
            },
            "network": {"intra_server_transfer_s": 0.1, "inter_server_transfer_s": 0.5},
        }
    )
    requests = parse_requests({"requests": [{"request_id": "r0", "workflow_id": "w"}]}, config)
    workload = build_workload(config, requests)
    instances = tuple(
        Instance(m, s, (2 * s + i,)) for i, (m, s) in enumerate(sorted(placement.items()))
    )
    plan = Plan("hand", 4, 2, instances, {"a": 1, "b": 1})
    m = summarise(simulate(config, plan, workload))
    assert m.latency_avg_s == pytest.approx(latency)
    assert m.makespan_s == pytest.approx(latency)
    assert m.server_efficiency_pct == se
    assert m.cross_server_communications == csc
    assert m.model_switches == 0 and m.completed_requests == 1 and m.total_nodes_executed == 2


# --------------------------------------------------------------------------- GSwarm vs baselines


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_gswarm_beats_random_and_round_robin_on_affinity_workload(seed, mode):
    config = parse_config(chain_config())
    raw = generate_requests(config, 120, seed=seed, duration_s=300)
    workload = build_workload(
        config, parse_requests({"requests": raw}, config), mode=mode, simulate=True, seed=seed
    )
    analysis = analyse(config, workload)
    gswarm, _ = choose_gswarm(config, analysis, workload, 16, 4)
    metrics = {"gswarm": summarise(simulate(config, gswarm, workload))}
    for name in ("random", "round-robin"):
        plan = make_plan(config, analysis, 16, 4, name, seed)
        metrics[name] = summarise(simulate(config, plan, workload))
    g = metrics["gswarm"]
    for name in ("random", "round-robin"):
        b = metrics[name]
        assert g.server_efficiency_pct > b.server_efficiency_pct, (name, g, b)
        assert g.cross_server_communications < b.cross_server_communications, (name, g, b)
    assert all(m.completed_requests == 120 and m.model_switches == 0 for m in metrics.values())


def test_compare_in_one_cli_run_and_deterministic(tmp_path, capsys):
    cfg = write(tmp_path / "chains.json", chain_config())
    argv = [
        "--gpus",
        "16",
        "--config",
        str(cfg),
        "--generate",
        "150",
        "--mode",
        "online",
        "--simulate",
        "--compare",
        "--seed",
        "3",
    ]
    assert main(argv + ["--output-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert (
        "ASSIGNMENT COMPARISON" in out
        and "gswarm vs random:" in out
        and "gswarm vs round-robin:" in out
    )
    assert main(argv + ["--output-dir", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "static_execution_log.json").read_text())
    b = json.loads((tmp_path / "b" / "static_execution_log.json").read_text())
    assert a == b  # seeded: same input, same plan, same executions
    cmp = a["comparison"]
    for name in ("random", "round-robin"):
        assert cmp["gswarm"]["server_efficiency_pct"] > cmp[name]["server_efficiency_pct"]
        assert (
            cmp["gswarm"]["cross_server_communications"] < cmp[name]["cross_server_communications"]
        )
    assert a["summary"]["server_efficiency"] == cmp["gswarm"]["server_efficiency_pct"]


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("gpus, per_server", [(12, 4), (16, 8), (13, 4), (15, 5)])
def test_multi_gpu_models_get_consecutive_gpus_on_one_server(strategy, gpus, per_server):
    config = parse_config(chain_config(3, 3, gpus={"m1_0": 2, "m2_1": 3}))
    raw = generate_requests(config, 60, seed=5)
    workload = build_workload(config, parse_requests({"requests": raw}, config))
    plan = make_plan(config, analyse(config, workload), gpus, per_server, strategy, seed=5)
    check_layout(plan)
    assert {i.model for i in plan.instances} == set(config.planned_models)
    for inst in plan.instances:
        assert len(inst.gpus) == config.models[inst.model].gpus_required
    assert sum(server_caps(gpus, per_server)) == gpus
    m = summarise(simulate(config, plan, workload))
    assert m.completed_requests == 60


def test_example_plan_layout_and_cli_report(tmp_path, capsys):
    rc = main(
        [
            "--gpus",
            "12",
            "--gpus-per-server",
            "6",
            "--mode",
            "online",
            "--config",
            str(EXAMPLES / "simple_config.json"),
            "--requests",
            str(EXAMPLES / "simple_requests.yaml"),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    for text in (
        "EXECUTION METRICS",
        "Total execution time (makespan):",
        "Server efficiency:",
        "Cross-server communications:",
        "P99:",
        "Utilization variance:",
        "Total switches: 0",
        "GPU 0 (Server 0):",
        "STATIC MODEL ASSIGNMENT (gswarm)",
    ):
        assert text in out
    log = json.loads((tmp_path / "static_execution_log.json").read_text())
    llm30b = [i for i in log["plan"]["instances"] if i["model"] == "llm30b"]
    assert llm30b and all(
        len(i["gpu_ids"]) == 2
        and i["gpu_ids"][1] == i["gpu_ids"][0] + 1
        and i["gpu_ids"][0] // 6 == i["server_id"]
        for i in llm30b
    )
    assert (tmp_path / "static_scheduler.log").read_text().count("completed in") == 300


# --------------------------------------------------------------------------- log structure


def test_log_json_has_the_documented_structure(tmp_path):
    assert (
        main(
            [
                "--gpus",
                "8",
                "--config",
                str(EXAMPLES / "simple_config.json"),
                "--generate",
                "40",
                "--simulate",
                "true",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    log = json.loads((tmp_path / "static_execution_log.json").read_text())
    assert {"summary", "gpu_assignments", "server_assignments", "executions"} <= set(log)
    s = log["summary"]
    for key in (
        "total_requests",
        "completed_requests",
        "total_nodes_executed",
        "mode",
        "simulate",
        "gpus",
        "makespan",
        "total_model_switches",
        "total_switch_time",
        "server_efficiency",
        "intra_server_workflows",
        "inter_server_workflows",
        "cross_server_communications",
        "gpus_per_server",
        "avg_request_response_time",
        "p99_request_response_time",
        "gpu_utilization_variance",
        "throughput_tasks_per_second",
    ):
        assert key in s, key
    assert s["gpus"] == list(range(8)) and s["gpus_per_server"] == 4
    assert s["mode"] == "offline" and s["simulate"] is True
    assert s["total_requests"] == s["completed_requests"] == 40
    assert s["total_model_switches"] == 0 and s["total_switch_time"] == 0
    assert s["intra_server_workflows"] + s["inter_server_workflows"] == 40
    assert s["server_efficiency"] == pytest.approx(100.0 * s["intra_server_workflows"] / 40)
    assert set(log["gpu_assignments"]) == {str(g) for g in range(8)}
    for g, entry in log["gpu_assignments"].items():
        assert entry["server_id"] == int(g) // 4
        assert (
            isinstance(entry["assigned_models"], list) and 0 <= entry["utilization"] <= 100.0 + 1e-9
        )
    assert set(log["server_assignments"]) == {"0", "1"}
    assert log["server_assignments"]["1"]["gpu_ids"] == [4, 5, 6, 7]
    execs = log["executions"]
    assert len(execs) == s["total_nodes_executed"]
    for e in execs:
        assert {
            "request_id",
            "workflow_id",
            "node_id",
            "model_name",
            "gpu_id",
            "server_id",
            "start_time",
            "end_time",
            "execution_time",
            "estimated_time",
            "switch_time",
            "waiting_time",
        } <= set(e)
        assert e["end_time"] == pytest.approx(e["start_time"] + e["execution_time"], abs=1e-5)
        assert e["switch_time"] == 0 and e["waiting_time"] >= -1e-9
        assert e["model_name"] in log["gpu_assignments"][str(e["gpu_id"])]["assigned_models"]
    crossing = sum(e["cross_server_inputs"] for e in execs)
    assert crossing == s["cross_server_communications"]
    assert [e["start_time"] for e in execs] == sorted(e["start_time"] for e in execs)


# --------------------------------------------------------------------------- bad input


GOOD = chain_config(2, 2)


def _bad(mutate):
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    return data


@pytest.mark.parametrize(
    "config, requests, expected",
    [
        (
            _bad(lambda d: d["workflows"]["chain1"]["nodes"][0].update(model="x")),
            None,
            "cfg.json: workflows.chain1.nodes[0].model: unknown model 'x'",
        ),
        (
            _bad(lambda d: d["workflows"]["chain0"]["edges"].append({"from": "n1", "to": "n0"})),
            None,
            "cfg.json: workflows.chain0.edges: contain a cycle",
        ),
        (
            _bad(lambda d: d["workflows"]["chain0"]["edges"][0].update(to="zz")),
            None,
            "cfg.json: workflows.chain0.edges[0].to: unknown node 'zz'",
        ),
        (
            _bad(lambda d: d["models"]["m0_0"].update(gpus_required=0)),
            None,
            "cfg.json: models.m0_0.gpus_required: must be an integer >= 1, got 0",
        ),
        (
            _bad(lambda d: d["models"]["m0_0"].update(gpus_required=5)),
            None,
            "cfg.json: models.m0_0.gpus_required: 5 consecutive GPUs on one server, "
            "but servers have at most 4",
        ),
        (
            _bad(lambda d: d["models"]["m1_1"].update(inference_time_mean="slow")),
            None,
            "cfg.json: models.m1_1.inference_time_mean: must be a number, got 'slow'",
        ),
        (
            _bad(lambda d: d.pop("workflows")),
            None,
            "cfg.json: workflows: must be a mapping, got NoneType",
        ),
        ("{not json", None, "cfg.json: line 1 column 2: invalid JSON"),
        (
            GOOD,
            {
                "requests": [
                    {"workflow_id": "chain0"},
                    {"workflow_id": "chain1"},
                    {"workflow_id": "x"},
                ]
            },
            "req.yaml: requests[2].workflow_id: unknown workflow 'x'",
        ),
        (
            GOOD,
            {"requests": [{"workflow_id": "chain0", "node_execution_times": {"n9": 1.0}}]},
            "req.yaml: requests[0].node_execution_times.n9: workflow 'chain0' has no node 'n9'",
        ),
        (
            GOOD,
            {"requests": [{"workflow_id": "chain0", "node_execution_times": {"n0": -1}}]},
            "req.yaml: requests[0].node_execution_times.n0: must be > 0, got -1",
        ),
        (
            GOOD,
            {
                "requests": [
                    {"request_id": "a", "workflow_id": "chain0"},
                    {"request_id": "a", "workflow_id": "chain1"},
                ]
            },
            "req.yaml: requests[1].request_id: duplicate request id 'a'",
        ),
        (
            GOOD,
            {"requests": [{"workflow_id": "chain0", "timestamp": "yesterday"}]},
            "req.yaml: requests[0].timestamp: must be an ISO-8601 date-time, got 'yesterday'",
        ),
        (GOOD, {"requests": []}, "req.yaml: requests: must list at least one request"),
        (
            GOOD,
            "requests: [\n  - workflow_id: chain0\n bad",
            "req.yaml: line 2 column 3: invalid YAML",
        ),
        (GOOD, "MISSING", "missing.yaml: no such file"),
    ],
)
def test_bad_files_give_a_clear_error_and_exit_2(tmp_path, capsys, config, requests, expected):
    cfg = write(tmp_path / "cfg.json", config)
    if requests == "MISSING":
        req = tmp_path / "missing.yaml"
    else:
        req = write(tmp_path / "req.yaml", requests or {"requests": [{"workflow_id": "chain0"}]})
    rc = main(
        ["--gpus", "8", "--config", str(cfg), "--requests", str(req), "--output-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "static_execution_log.json").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--gpus", "3"], "--gpus: 3 GPUs in servers of 4 cannot host each of the 4 models once"),
        (["--gpus", "0"], "--gpus: must be >= 1, got 0"),
        (["--gpus", "8", "--out", "x.yml"], "--out: needs --stack"),
        (
            ["--gpus", "8", "--mode", "online"],
            "req.yaml: requests[0].timestamp: required in --mode online",
        ),
        (["--gpus", "8", "--spill-factor", "-1"], "--spill-factor: must be >= 0"),
        (["--gpus", "8", "--assign", "best"], "invalid choice: 'best'"),
        (["--gpus", "8", "--simulate", "maybe"], "expected true or false, got 'maybe'"),
        ([], "the following arguments are required: --gpus"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, expected):
    cfg = write(tmp_path / "cfg.json", GOOD)
    req = write(tmp_path / "req.yaml", {"requests": [{"workflow_id": "chain0"}]})
    rc = main(argv + ["--config", str(cfg), "--requests", str(req), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err, err
    assert "Traceback" not in err
