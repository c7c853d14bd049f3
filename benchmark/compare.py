"""``quart-faas compare``: every system on the same arrivals; a table, CSVs, JSON, plots.

Flags follow seed 003's ``compare_schedulers.py`` (``--duration``, ``--rps``,
``--cv``, ``--name``, ``--centralized-only``, ``--gossip-only``) and add
``--systems``, ``--mode sim|live``, ``--trace``, ``--seed``, ``--fail-at``, and, for
simulated runs, ``--scrape-interval`` / ``--control-period`` (``benchmark/clocks.py``).

The arrivals are generated once per CV (or loaded from ``--arrivals`` /
``--trace``), saved beside the results and hashed; every system is run on
that one file and the hash each run saw is printed, so "identical workload"
is checked, not assumed.  ``--cv 1,4,8`` sweeps and adds the P99-and-cost vs
CV plot.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmark import clocks, rig_workload, workloads
from benchmark.report import files as report_files
from benchmark.report import plots, table
from benchmark.report.predictors import predictor_lines
from benchmark.results import RunResult, summarize
from benchmark.systems.base import Bounds
from benchmark.systems.registry import SYSTEMS, parse_systems

SCHEDULERS = ("central", "gossip")
PIPELINE = "minilm"


class CompareError(ValueError):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quart-faas compare",
        description="Compare Quart with today's autoscalers (and central vs gossip scheduling) "
                    "on identical bursty workloads, simulated or live.")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of arrivals (300)")
    p.add_argument("--rps", type=float, default=5.0, help="mean requests per second (5)")
    p.add_argument("--cv", default="8", help="burstiness: CV of inter-arrivals; a comma list "
                                             "sweeps (e.g. 1,4,8)")
    p.add_argument("--name", default="scheduler_comparison", help="experiment name")
    p.add_argument("--systems", default="quart,baselines",
                   help="comma list of systems or shorthands (all, baselines, quart-ablations, "
                        "schedulers); names: " + ", ".join(sorted(SYSTEMS)) + ", central, gossip")
    p.add_argument("--quart-only", action="store_true", help="only Quart (full chain)")
    p.add_argument("--baselines-only", action="store_true", help="only the baselines")
    p.add_argument("--centralized-only", action="store_true", help="only the central scheduler")
    p.add_argument("--gossip-only", action="store_true", help="only the gossip scheduler")
    p.add_argument("--mode", choices=("sim", "live"), default="sim")
    p.add_argument("--trace", type=Path, help="Azure Functions trace file (2019 per-minute "
                                              "counts or 2021 per-invocation) to replay")
    p.add_argument("--trace-top", type=int, default=10,
                   help="replay the N busiest functions of --trace (10)")
    p.add_argument("--arrivals", type=Path, help="a saved arrivals file to replay as is")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, metavar="A-B|A,B,...",
                   help="run every CV on each of these seeds (e.g. 100-104, the held-out "
                        "seeds) and add a median/worst-over-seeds table (overrides --seed)")
    p.add_argument("--workload", choices=("minilm", "mix", "mix-azure", "rig"), default="minilm",
                   help="minilm: the 3-stage MiniLM pipeline (default); mix: five pipelines "
                        "of depths 2-6 (benchmark/sim/mix.py) with gamma arrivals at --cv; "
                        "mix-azure: the same pipelines, synthetic Azure minute shapes; rig: "
                        "stack.yml's emulated-accelerator pipeline (4 stages, 16 devices), "
                        "live or simulated (benchmark/rig_workload.py)")
    p.add_argument("--fail-at", action="append", default=[], metavar="T[:KIND[:WHAT]]",
                   help="inject a failure at T seconds: KIND node|replica (default node)")
    p.add_argument("--slo", type=float, default=None,
                   help="end-to-end latency SLO in seconds (0.5; the rig's 1)")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=None,
                   help="per stage (default: 20 in sim, 5 live: the stack's CE cap; the "
                        "rig 5 in both)")
    p.add_argument("--nodes", type=int, default=3, help="simulated nodes")
    p.add_argument("--devices", type=int, default=None,
                   help="--workload rig: emulated devices on the node (16, the stack's "
                        "QUART_EMU_DEVICES), live and simulated")
    clocks.add_arguments(p)
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory")
    p.add_argument("--dashboard", action="store_true", help="live terminal dashboard")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--stack", default="stack.yml", help="live mode: the stack to deploy")
    return p


def system_names(a: argparse.Namespace) -> list[str]:
    if a.centralized_only:
        return ["central"]
    if a.gossip_only:
        return ["gossip"]
    if a.quart_only:
        return ["quart"]
    spec = "baselines" if a.baselines_only else a.systems
    names: list[str] = []
    for part in (s.strip() for s in spec.split(",") if s.strip()):
        if part == "schedulers":
            names.extend(SCHEDULERS)
        elif part in SCHEDULERS:
            names.append(part)
        else:  # in the order given, shorthands expanded where they stand
            try:
                names.extend(parse_systems(part))
            except (KeyError, ValueError) as e:
                raise CompareError(str(e).strip("'\"")) from None
    if not names:
        raise CompareError("no systems selected")
    if a.mode == "live" and any(n in SCHEDULERS for n in names):
        raise CompareError("central/gossip scheduling runs in the simulator only (--mode sim)")
    return list(dict.fromkeys(names))


def cv_list(text: str) -> list[float]:
    try:
        cvs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CompareError(
            f"--cv must be a number or a comma list of numbers, got {text!r}") from None
    if not cvs or any(not math.isfinite(c) or c <= 0 for c in cvs):
        raise CompareError(f"--cv values must be > 0, got {text!r}")
    return cvs


def failures(specs: list[str], duration: float) -> list[tuple[float, str, str | None]]:
    out = []
    for spec in specs:
        parts = spec.split(":")
        try:
            t = float(parts[0])
        except ValueError:
            raise CompareError(f"--fail-at {spec!r}: T must be seconds") from None
        kind = parts[1] if len(parts) > 1 else "node"
        if kind not in ("node", "replica"):
            raise CompareError(f"--fail-at {spec!r}: KIND must be node or replica")
        if not 0 <= t < duration:
            raise CompareError(f"--fail-at {spec!r}: T must be within the run (0..{duration:g})")
        out.append((t, kind, parts[2] if len(parts) > 2 else None))
    return out


def make_arrivals(a: argparse.Namespace, cv: float, out: Path) -> tuple[Any, Path]:
    if a.arrivals:
        arr = workloads.Arrivals.load(a.arrivals)
    elif a.trace:
        arr = workloads.load_azure(a.trace, seed=a.seed, top_n=a.trace_top,
                                   minute_range=(0, max(1, math.ceil(a.duration / 60))))
        if arr.duration_s > a.duration:
            arr = arr.truncate(a.duration)
    elif a.workload in ("mix", "mix-azure"):
        from benchmark.sim.mix import MIX_SHARE
        from benchmark.workloads.mix import mix_azure, mix_gamma

        make = mix_gamma if a.workload == "mix" else mix_azure
        arr = make(a.rps, cv, a.duration, MIX_SHARE, seed=a.seed)
    else:
        target = rig_workload.TARGET if a.workload == "rig" else PIPELINE
        arr = workloads.gamma(a.rps, cv, a.duration, seed=a.seed, target=target)
    seed = f"_seed{a.seed}" if a.seeds else ""
    path = out / f"{a.name}{seed}_arrivals_cv{cv:g}.json"
    arr.save(path)
    return arr, path


def _bounds(a: argparse.Namespace) -> Bounds:
    top = a.max_replicas or (5 if a.mode == "live" or a.workload == "rig" else 20)
    if not 0 <= a.min_replicas <= top or top < 1:
        raise CompareError(f"need 0 <= --min-replicas <= --max-replicas, got "
                           f"{a.min_replicas}..{top}")
    return Bounds(a.min_replicas, top)


def _sim_pipelines(arrivals: Any, slo_s: float, workload: str = "minilm") -> list[Any]:
    """The calibrated MiniLM pipeline for each target of the workload (a trace maps
    each of its functions to one pipeline of its own); the mix's own pipelines."""
    from benchmark.sim.calibration import minilm_pipeline

    if workload != "minilm":
        from benchmark.sim.mix import mix_pipelines

        return mix_pipelines(slo_s)
    return [minilm_pipeline(name=t, slo_s=slo_s) for t in arrivals.targets]


def run_one(name: str, arrivals: Any, a: argparse.Namespace, bounds: Bounds,
            fails: list[tuple[float, str, str | None]], dash: Any, con: Console) -> RunResult:
    def progress(t: float, total: float) -> None:
        dash.update(name, progress_s=t, duration_s=total)
    if name in SCHEDULERS:
        from benchmark.studies import sched

        t_fail = fails[0][0] if fails else None
        node = fails[0][2] if fails else None
        return sched.run(arrivals, scheduler=name, nodes=a.nodes, slo_s=a.slo,
                         fail_at=t_fail, fail_node=node, seed=a.seed)
    # the scrape interval and Quart's period of a simulated run (benchmark/clocks.py)
    options: dict[str, Any] = {}
    if a.mode == "sim":
        options = rig_workload.options(a, name) if a.workload == "rig" else \
            a.clocks.options(name)
    if name == "static":  # sized once from the workload's own mean rate, per stage
        options["mean_rps"] = {f"{t}-stage-{i}": len(arrivals.for_target(t)) / arrivals.duration_s
                               for t in arrivals.targets for i in range(16)}
        if a.workload == "rig":  # and from the profile, not the run's first seconds
            options["service_time_s"] = rig_workload.profiled_service_s()
    (system,) = parse_systems(name, bounds, {name: options} if options else None)
    if a.mode == "live":
        from benchmark.live import LiveConfig, run_live

        # a short state path: zygote sockets live under it (AF_UNIX paths are <= 107 bytes)
        state = Path(tempfile.mkdtemp(prefix="quart-cmp-"))
        cfg = rig_workload.live_config(a, bounds, state) if a.workload == "rig" else \
            LiveConfig(stack_file=a.stack, state_dir=state, slo_s=a.slo, bounds=bounds)
        try:
            return run_live(arrivals, system, cfg, say=lambda m: None, on_update=dash.update)
        finally:
            shutil.rmtree(state, ignore_errors=True)
    from benchmark import sim

    if a.workload == "rig":
        pipelines, cluster, config = rig_workload.sim_parts(a, bounds)
    else:
        pipelines = _sim_pipelines(arrivals, a.slo, a.workload)
        cluster, config = sim.ClusterSpec.uniform(a.nodes, 64.0, 16), a.clocks.sim_config()
    sim_fails = [(t, kind, what or (cluster.nodes[0].name if kind == "node"
                                    else pipelines[0].stages[0].name)) for t, kind, what in fails]
    return sim.run(arrivals, pipelines, system, cluster=cluster, slo_s=a.slo,
                   fail_at=sim_fails, seed=a.seed, config=config,
                   on_progress=progress)


def _run_systems(names: list[str], arrivals: Any, digest: str, a: argparse.Namespace,
                 bounds: Bounds, fails: list[tuple[float, str, str | None]], name: str,
                 con: Console) -> list[RunResult]:
    """Every system on the same arrivals, one after the other, under one dashboard; a system
    that fails is reported and left out."""
    from benchmark.report.dashboard import Dashboard

    results: list[RunResult] = []
    with Dashboard(names, slo_s=a.slo, duration_s=arrivals.duration_s,
                   dashboard=a.dashboard, title=f"{name} ({a.mode})") as dash:
        for system in names:
            t0 = time.perf_counter()
            try:
                r = run_one(system, arrivals, a, bounds, fails, dash, con)
            except Exception as e:  # noqa: BLE001 (one broken system must not lose the others' results)
                dash.finish(system, failed=True)
                con.print(f"[red]{system} failed:[/red] {type(e).__name__}: {e}")
                continue
            dash.finish(system)
            seen = r.workload.get("sha256", "")
            con.print(f"  {system:<22} done in {time.perf_counter() - t0:6.1f}s  "
                      f"arrivals sha256 {seen[:16]}…"
                      + ("" if seen == digest else "  [red]DIFFERENT ARRIVALS[/red]"))
            results.append(r)
    return results


def seed_list(text: str | None, default: int) -> list[int]:
    """``--seeds``: ``100-104`` or ``0,3,7``; without it, ``--seed`` alone."""
    if text is None:
        return [default]
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise CompareError(f"--seeds must look like 100-104 or 0,3,7, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise CompareError(f"--seeds must be non-negative integers, got {text!r}")
    return list(dict.fromkeys(seeds))


def _check(a: argparse.Namespace, con: Console) -> tuple[list[str], list[float], list[int],
                                                         Bounds, list[Any]] | None:
    """The arguments, checked; None (after saying why) when they are bad."""
    try:
        names = system_names(a)
        cvs = cv_list(a.cv)
        seeds = seed_list(a.seeds, a.seed)
        bounds = _bounds(a)
        if a.duration <= 0 or a.rps <= 0:
            raise CompareError("--duration and --rps must be > 0")
        if a.mode == "live" and a.workload in ("mix", "mix-azure"):
            raise CompareError("--workload mix/mix-azure runs in the simulator only (--mode sim)")
        if a.devices is not None and (a.workload != "rig" or a.devices < 1):
            raise CompareError("--devices sets the rig's device budget: --workload rig and "
                               f">= 1, got {a.devices} with --workload {a.workload}")
        if a.slo is None:
            a.slo = rig_workload.SLO_S if a.workload == "rig" else 0.5
        if not (math.isfinite(a.slo) and a.slo > 0):
            raise CompareError(f"--slo must be > 0 seconds, got {a.slo:g}")
        fails = failures(a.fail_at, a.duration)
        a.clocks = rig_workload.clocks(a) if a.workload == "rig" else clocks.from_args(a)
        if a.mode == "sim":
            a.clocks.check(names)
        if a.mode == "live" and a.workload == "rig":
            rig_workload.ensure_partition(con.print)
        elif a.mode == "live":
            from benchmark.live.run import ensure_partition

            ensure_partition(a.stack, con.print)
    except (CompareError, ValueError, OSError) as e:
        con.print(f"[red]error:[/red] {e}")
        return None
    return names, cvs, seeds, bounds, fails


def _point(a: argparse.Namespace, cv: float, names: list[str], bounds: Bounds,
           fails: list[Any], name: str, stamp: str, con: Console,
           argv: list[str] | None) -> list[RunResult] | None:
    """Every system at one (seed, CV): the table, the predictor lines, the files."""
    arrivals, path = make_arrivals(a, cv, a.out)
    digest = arrivals.sha256()
    con.print(f"arrivals: {len(arrivals)} requests over {arrivals.duration_s:g}s, CV {cv:g} "
              f"-> {path}  sha256 {digest}")
    results = _run_systems(names, arrivals, digest, a, bounds, fails, name, con)
    if not results:
        con.print("[red]no system finished[/red]")
        return None
    rows = table.comparison_rows([summarize(r, name) for r in results])
    systems = [r.system for r in results]
    if con.is_terminal:
        con.print(table.render_rich(rows, systems))
    else:  # logs and pipes: the seed's fixed-width layout, never squeezed to 80 columns
        print(table.render_plain(rows, systems), flush=True)
    print(predictor_lines(results), end="", flush=True)
    written = report_files.write_report(results, a.out, name, command=["quart-faas", "compare",
                                        *(sys.argv[1:] if argv is None else argv)],
                                        stamp=stamp)
    con.print(f"wrote {written.table}, {written.json} and {len(written.csv)} CSV file(s)")
    if not a.no_plots:
        for p in plots.write_run_plots(results, a.out, name, stamp).values():
            con.print(f"plot: {p}")
    return results


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    con = Console()
    checked = _check(a, con)
    if checked is None:
        return 2
    names, cvs, seeds, bounds, fails = checked
    if a.mode == "sim":
        con.print(rig_workload.describe(a) if a.workload == "rig" else a.clocks.describe())
    if a.mode == "sim" and any(n.startswith("quart") for n in names):
        import torch  # the simulated Quart trains its GAT in this process

        # one intra-op thread: the simulation is one thread anyway, and two OpenMP threads
        # spinning on a shared 2-core machine made each training round ~30x slower
        torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    sweep: list[tuple[float, str, dict[str, Any]]] = []
    runs: list[tuple[int, float, RunResult]] = []
    stamp = report_files.timestamp()
    t0 = time.perf_counter()
    for k, seed in enumerate(seeds):
        a.seed = seed
        for cv in cvs:
            name = a.name + (f"_seed{seed}" if len(seeds) > 1 else "") + \
                (f"_cv{cv:g}" if len(cvs) > 1 else "")
            con.print(f"[bold]seed {seed} ({k + 1}/{len(seeds)}), CV {cv:g}[/bold]  "
                      f"{time.perf_counter() - t0:.0f}s so far")
            try:
                results = _point(a, cv, names, bounds, fails, name, stamp, con, argv)
            except (ValueError, OSError) as e:
                con.print(f"[red]error:[/red] workload: {e}")
                return 2
            if results is None:
                return 1
            sweep.extend((cv, r.system, summarize(r, name)) for r in results)
            runs.extend((seed, cv, r) for r in results)
    if len(cvs) > 1 and len(seeds) == 1 and not a.no_plots:
        p = plots.plot_cv_sweep(sweep, a.out / f"{a.name}_cv_sweep_{stamp}.png")
        con.print(f"plot: {p}")
    if len(seeds) > 1:
        from benchmark.report import heldout

        md, js = heldout.write(runs, a.out, a.name, stamp, command=["quart-faas", "compare",
                               *(sys.argv[1:] if argv is None else argv)])
        print(md.read_text(), flush=True)
        con.print(f"wrote {md} and {js}")
    con.print(f"total {time.perf_counter() - t0:.0f}s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
