"""Command line of the static planner: ``python -m planner`` / ``quart-faas plan``.

The flags are the seed's (``--gpus``, ``--gpus-per-server``, ``--mode``,
``--config``, ``--requests``, ``--simulate``) with the seed's defaults
(``simple_config.json``, ``simple_requests.yaml`` in the current directory; where
there is no ``simple_config.json``, the example shipped in ``examples/`` beside this
module, so ``quart-faas plan --gpus 8`` works from any directory), plus ours:
``--assign`` (gswarm | random | round-robin), ``--compare`` (all three on the same
workload), ``--seed``, ``--generate N`` (synthesise the requests), ``--stack``/``--out``
(plan our pipelines, emit constraints),
``--output-dir`` (where ``static_execution_log.json`` and
``static_scheduler.log`` go).

``main`` never raises for bad input: argparse problems and invalid files are
one line on stderr and exit code 2, as a user of a CLI expects.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analysis import Analysis, analyse
from .assign import STRATEGIES, Plan, make_plan
from .choose import Candidate, choose_gswarm
from .metrics import Metrics, summarise
from .report import comparison_lines, execution_log, metrics_lines, plan_lines
from .simulate import SimResult, simulate
from .spec import PlanInputError, Request, SystemConfig, load_config, load_requests, parse_requests
from .stackfile import StackPlanInput, emit_constraints, load_stack
from .workload import Workload, build_workload, generate_requests

__all__ = ["build_parser", "main"]

LOG_JSON = "static_execution_log.json"
LOG_TEXT = "static_scheduler.log"
DEFAULT_CONFIG = Path("simple_config.json")
DEFAULT_REQUESTS = Path("simple_requests.yaml")
EXAMPLE_DIR = Path(__file__).resolve().parent / "examples"  # package data (pyproject.toml)
DEFAULT_STACK_REQUESTS = 100


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# size: one add_argument per option, in --help order: a table, not logic to split
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quart-faas plan",
        description="Static workflow-locality planner: assign models to GPUs grouped in servers "
        "so workflows complete inside one server; report SE, CSC, utilisation, latency.",
    )
    p.add_argument(
        "--gpus", type=int, required=True, help="total number of GPUs (or replica slots)"
    )
    p.add_argument("--gpus-per-server", type=int, default=4, help="GPUs per server (default: 4)")
    p.add_argument(
        "--mode",
        choices=("offline", "online"),
        default="offline",
        help="offline: every request at t=0 (default); online: at its timestamp",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"system configuration JSON (default: {DEFAULT_CONFIG} here, else the shipped "
        f"example {EXAMPLE_DIR / DEFAULT_CONFIG.name}; with --stack: optional timing/network "
        "overrides)",
    )
    p.add_argument(
        "--requests",
        type=Path,
        default=None,
        help=f"workflow requests YAML (default: {DEFAULT_REQUESTS} here, else the shipped "
        "example's when its config is planned)",
    )
    p.add_argument(
        "--simulate",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="durations drawn (seeded) from the config's per-model distributions "
        "instead of the requests' estimates (default: false)",
    )
    p.add_argument(
        "--assign",
        choices=STRATEGIES,
        default="gswarm",
        help="model-to-GPU assignment (default: gswarm)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also run the other assignments on the same workload and print a comparison",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of sampling and random assignment (default: 0)"
    )
    p.add_argument(
        "--spill-factor",
        type=float,
        default=2.0,
        help="a node leaves its workflow's server when the local queue is longer than "
        "another replica's by more than this many node execution times (default: 2; "
        "inf: never, the seed's strict locality)",
    )
    p.add_argument(
        "--generate",
        type=int,
        metavar="N",
        default=None,
        help="synthesise N requests from the config instead of reading --requests",
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=600.0,
        help="span of generated arrival timestamps, seconds (default: 600)",
    )
    p.add_argument(
        "--stack",
        type=Path,
        default=None,
        help="plan the pipelines of a faas-cli stack.yml (stages as models)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --stack: write the stack with placement constraints here",
    )
    p.add_argument(
        "--node-names",
        default=None,
        help="comma-separated node names for servers 0,1,... (default: server-0, server-1, ...)",
    )
    p.add_argument(
        "--constraint-key",
        default="kubernetes.io/hostname",
        help="node label the constraints select on (default: kubernetes.io/hostname)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("."),
        help=f"directory for {LOG_JSON} and {LOG_TEXT} (default: current directory)",
    )
    return p


def _load(args: argparse.Namespace) -> tuple[SystemConfig, list[Request], StackPlanInput | None]:
    stack: StackPlanInput | None = None
    if args.stack is not None:
        overrides = load_config(args.config, overrides=True) if args.config is not None else None
        stack = load_stack(args.stack, overrides)
        config = stack.config
    else:
        args.config = _default_config() if args.config is None else args.config
        config = load_config(args.config)
    count = args.generate
    if count is not None and args.requests is not None:
        raise PlanInputError("--generate", "", "give either --generate or --requests, not both")
    if count is None and args.requests is None and stack is not None:
        count = DEFAULT_STACK_REQUESTS
    if count is not None:
        if count < 1:
            raise PlanInputError("--generate", "", f"must be >= 1, got {count}")
        raw = generate_requests(config, count, seed=args.seed, duration_s=args.duration_s)
        requests = parse_requests({"requests": raw}, config, "generated requests")
    else:
        path = args.requests if args.requests is not None else _default_requests(args.config)
        requests = load_requests(path, config)
        if not requests:
            raise PlanInputError(path.name, "requests", "must list at least one request")
        if args.mode == "online":
            for i, r in enumerate(requests):
                if r.timestamp is None:
                    raise PlanInputError(
                        path.name, f"requests[{i}].timestamp", "required in --mode online"
                    )
    return config, requests, stack


def _default_config() -> Path:
    """The seed's ./simple_config.json; where there is none, the shipped example, so that
    `quart-faas plan --gpus 8` works from any directory (said on stderr: no surprise)."""
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    shipped = EXAMPLE_DIR / DEFAULT_CONFIG.name
    print(f"note: no {DEFAULT_CONFIG} in {Path.cwd()}: planning the shipped example {shipped} "
          "(--config to choose)", file=sys.stderr)
    return shipped


def _default_requests(config: Path) -> Path:
    """./simple_requests.yaml; the shipped example's only for the shipped config, so that a
    config of one's own never runs with requests written for another."""
    shipped = EXAMPLE_DIR / DEFAULT_REQUESTS.name
    if DEFAULT_REQUESTS.exists() or config.resolve() != EXAMPLE_DIR / DEFAULT_CONFIG.name:
        return DEFAULT_REQUESTS
    return shipped


def _node_names(args: argparse.Namespace, servers: int) -> list[str]:
    if args.node_names is None:
        return [f"server-{s}" for s in range(servers)]
    names = [n.strip() for n in args.node_names.split(",") if n.strip()]
    if len(names) < servers:
        raise PlanInputError("--node-names", "", f"{len(names)} names for {servers} servers")
    return names


def _constraints(
    plan: Plan, result: SimResult, stack: StackPlanInput, names: list[str], key: str
) -> tuple[dict[str, list[str]], list[str]]:
    """Per planned function, the server that ran most of its work (ties: lowest server)."""
    work: dict[str, Counter[int]] = {m: Counter() for m in stack.config.models}
    for e in result.executions:
        work[e.model_name][e.server_id] += 1
    out: dict[str, list[str]] = {}
    notes: list[str] = []
    for fn in stack.config.models:
        servers = sorted({i.server for i in plan.instances_of(fn)})
        best = max(servers, key=lambda s: (work[fn][s], -s))
        out[fn] = [f"{key}={names[best]}"]
        extra = [names[s] for s in servers if s != best]
        note = f"  {fn}: {key}={names[best]}"
        if extra:
            note += f"  (replicas also planned on {', '.join(extra)}: a nodeSelector pins one node)"
        notes.append(note)
    return out, notes


@dataclass
class _Runs:
    """Every strategy asked for, planned and simulated on one workload."""

    workload: Workload
    analysis: Analysis
    by_name: dict[str, tuple[Plan, SimResult, Metrics]]
    candidates: list[Candidate]  # GSwarm's variants, when it ran
    trace: list[str]  # the event log of ``--assign``'s run


def _simulate_all(args: argparse.Namespace, config: SystemConfig, requests: list[Request]) -> _Runs:
    workload = build_workload(
        config, requests, mode=args.mode, simulate=args.simulate, seed=args.seed
    )
    analysis = analyse(config, workload)
    names = list(dict.fromkeys([args.assign] + (list(STRATEGIES) if args.compare else [])))
    trace: list[str] = [
        (
            f"static planner: {len(workload.jobs)} requests, mode {args.mode}, "
            f"simulate {str(args.simulate).lower()}, GPUs {args.gpus}, "
            f"GPUs/server {args.gpus_per_server}, assignment {args.assign}, seed {args.seed}"
        )
    ]
    runs = _Runs(workload, analysis, {}, [], trace)
    for name in names:
        if name == "gswarm":
            plan, runs.candidates = choose_gswarm(
                config,
                analysis,
                workload,
                args.gpus,
                args.gpus_per_server,
                spill_factor=args.spill_factor,
            )
        else:
            plan = make_plan(config, analysis, args.gpus, args.gpus_per_server, name, args.seed)
        result = simulate(
            config,
            plan,
            workload,
            trace.append if name == args.assign else None,
            spill_factor=args.spill_factor,
        )
        runs.by_name[name] = (plan, result, summarise(result))
    return runs


def _summary_lines(
    args: argparse.Namespace, runs: _Runs, stack: StackPlanInput | None
) -> list[str]:
    plan, result, metrics = runs.by_name[args.assign]
    lines = plan_lines(runs.analysis, plan)
    if runs.candidates and args.assign == "gswarm":
        distinct = len({c.same_as or c.variant.label for c in runs.candidates})
        lines.append(
            f"GSwarm: {len(runs.candidates)} variants, {distinct} distinct plans simulated; "
            f"kept {plan.variant}"
        )
    if stack is not None and stack.unplanned:
        lines.append(
            f"Functions without pipeline annotations (not planned): {', '.join(stack.unplanned)}"
        )
    lines += [""] + metrics_lines(metrics, result, plan)
    if args.compare:
        ordered = {n: runs.by_name[n][2] for n in STRATEGIES}
        lines += [""] + comparison_lines(ordered, runs.workload)
    return lines


def _log(args: argparse.Namespace, runs: _Runs) -> dict[str, Any]:
    plan, result, metrics = runs.by_name[args.assign]
    extra = {"planner_input": str(args.stack or args.config or DEFAULT_CONFIG)}
    log = execution_log(
        plan=plan,
        metrics=metrics,
        result=result,
        analysis=runs.analysis,
        workload=runs.workload,
        extra_summary=extra,
    )
    if runs.candidates:
        log["plan"]["gswarm_candidates"] = [c.to_json() for c in runs.candidates]
    if args.compare:
        log["comparison"] = {n: runs.by_name[n][2].to_json() for n in STRATEGIES}
    return log


def _place_stack(
    args: argparse.Namespace, runs: _Runs, stack: StackPlanInput, names: list[str],
    log: dict[str, Any],
) -> list[str]:
    """The constraints into the log (and ``--out``); the lines that report them."""
    plan, result, _ = runs.by_name[args.assign]
    constraints, notes = _constraints(plan, result, stack, names, args.constraint_key)
    log["constraints"] = constraints
    lines = ["", "Placement constraints (faas-cli `constraints:`):"] + notes
    if args.out is not None:
        text, in_place = emit_constraints(stack, constraints)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        how = "edited in place" if in_place else "re-serialised (comments and anchors not kept)"
        lines.append(f"Wrote {args.out} ({how})")
    return lines


def _run(args: argparse.Namespace) -> int:
    if not args.spill_factor >= 0:
        raise PlanInputError("--spill-factor", "", f"must be >= 0, got {args.spill_factor}")
    if args.out is not None and args.stack is None:
        raise PlanInputError("--out", "", "needs --stack (it writes a stack.yml with constraints)")
    config, requests, stack = _load(args)
    runs = _simulate_all(args, config, requests)
    server_names = _node_names(args, runs.by_name[args.assign][0].server_count)
    lines = _summary_lines(args, runs, stack)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    log = _log(args, runs)
    if stack is not None:
        lines += _place_stack(args, runs, stack, server_names, log)
    json_path = args.output_dir / LOG_JSON
    json_path.write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    (args.output_dir / LOG_TEXT).write_text("\n".join(runs.trace) + "\n", encoding="utf-8")
    lines += [
        "",
        f"Detailed execution log written to {json_path}",
        f"Event log written to {args.output_dir / LOG_TEXT}",
    ]
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the planner; 0 on success, 2 on bad arguments or bad input files."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return _run(args)
    except PlanInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
