"""``python -m benchmark.workloads``: generate, inspect and re-create workload files.

``generate`` writes one arrivals file and prints its sha256 (the number to
compare across systems and runs), the count and the empirical rate and CV;
``show`` prints a file's summary; ``samples`` rewrites the shipped synthetic
sample traces.  Bad flags are refused with a message naming the flag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmark.workloads import azure, generators, synthetic
from benchmark.workloads.arrivals import Arrivals

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# the flags each kind needs and the ones it may take (argparse dest names)
KINDS: dict[str, tuple[set[str], set[str]]] = {
    "poisson": ({"rps", "duration"}, {"target"}),
    "gamma": ({"rps", "cv", "duration"}, {"target"}),
    "step": ({"levels", "duration"}, {"cv", "target"}),
    "ramp": ({"rps_from", "rps_to", "duration"}, {"cv", "target"}),
    "azure": ({"trace"}, {"top", "minutes", "time_scale", "spacing", "cv", "targets"}),
    "synthetic-azure": ({"functions", "length_min"},
                        {"top", "minutes", "time_scale", "spacing", "cv", "targets",
                         "trace_out"}),
}
_KIND_FLAGS = set().union(*(need | may for need, may in KINDS.values()))


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _levels(text: str) -> list[tuple[float, float]]:
    try:
        pairs = [part.split(":") for part in text.split(",") if part.strip()]
        return [(float(t), float(r)) for t, r in pairs]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of t_start:rate pairs, e.g. 0:5,60:20,120:5") from None


def _range(text: str) -> tuple[int, int]:
    try:
        a, b = text.split(":")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a minute range START:STOP, e.g. 0:60") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.workloads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write one seeded arrivals file")
    g.add_argument("--kind", required=True, choices=sorted(KINDS))
    g.add_argument("--out", required=True, help="arrivals file to write")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--name", help="workload name (default: made from the parameters)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g.add_argument("--rps", type=float, help="mean requests per second")
    g.add_argument("--cv", type=float, help="coefficient of variation of inter-arrivals")
    g.add_argument("--duration", type=float, help="seconds")
    g.add_argument("--target", help="pipeline/function the requests go to (default pipeline)")
    g.add_argument("--levels", type=_levels, help="step: t_start:rate pairs, e.g. 0:5,60:20")
    g.add_argument("--rps-from", type=float, help="ramp: rate at t=0")
    g.add_argument("--rps-to", type=float, help="ramp: rate at the end")
    g.add_argument("--trace", help="azure: a 2019 per-minute or 2021 per-invocation file")
    g.add_argument("--top", type=int, help="azure: keep the N busiest functions")
    g.add_argument("--minutes", type=_range, help="azure: minute range START:STOP (0-based)")
    g.add_argument("--time-scale", type=float, help="azure: 0.1 plays 10 minutes in 1")
    g.add_argument("--spacing", choices=azure.SPACINGS,
                   help="azure per-minute counts: placement within a minute (uniform)")
    g.add_argument("--targets", help="azure: comma-separated target names, busiest first")
    g.add_argument("--functions", type=int, help="synthetic-azure: number of functions")
    g.add_argument("--length-min", type=int, help="synthetic-azure: trace length, minutes")
    g.add_argument("--trace-out", help="synthetic-azure: also write the per-minute CSV here")
    s = sub.add_parser("show", help="print the summary of an arrivals file")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="list every target (default: top 20)")
    m = sub.add_parser("samples", help="rewrite the synthetic sample traces")
    m.add_argument("--out", default=str(SAMPLES_DIR))
    return p


def _check_flags(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    need, may = KINDS[a.kind]
    missing = [_flag(d) for d in sorted(need) if getattr(a, d) is None]
    if missing:
        p.error(f"--kind {a.kind} needs {', '.join(missing)}")
    extra = [_flag(d) for d in sorted(_KIND_FLAGS - need - may) if getattr(a, d) is not None]
    if extra:
        p.error(f"--kind {a.kind} does not take {', '.join(extra)}")
    if a.kind in ("azure", "synthetic-azure") and a.cv is not None and a.spacing != "gamma":
        p.error(f"--cv with --kind {a.kind} sets the in-minute burstiness: add --spacing gamma")


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _build(a: argparse.Namespace) -> Arrivals:
    target = a.target or "pipeline"
    if a.kind == "poisson":
        return generators.poisson(a.rps, a.duration, a.seed, target, name=a.name)
    if a.kind == "gamma":
        return generators.gamma(a.rps, a.cv, a.duration, a.seed, target, name=a.name)
    if a.kind == "step":
        return generators.step(a.levels, a.duration, _or(a.cv, 1.0), a.seed, target, name=a.name)
    if a.kind == "ramp":
        return generators.ramp(a.rps_from, a.rps_to, a.duration, _or(a.cv, 1.0), a.seed, target,
                               name=a.name)
    opts = {"top_n": a.top, "minute_range": a.minutes, "time_scale": _or(a.time_scale, 1.0),
            "target_names": a.targets.split(",") if a.targets else None, "name": a.name}
    spread = {"spacing": a.spacing or "uniform", "cv": _or(a.cv, 1.0), "seed": a.seed}
    if a.kind == "azure":
        return azure.load_azure(a.trace, **opts, **spread)
    trace = synthetic.synthetic_azure(a.functions, a.length_min, seed=a.seed, out=a.trace_out)
    return trace.to_arrivals(**opts, **spread)


def _print_summary(sm: dict, sha: str, path: str, show_all: bool) -> None:
    cv = "n/a" if sm["cv"] is None else f"{sm['cv']:.3f}"
    print(f"sha256 {sha}  {path}")
    print(f"name {sm['name']}  kind {sm['kind']}  seed {sm['seed']}")
    print(f"n {sm['n']}  duration {sm['duration_s']:g} s  rate {sm['rate_per_s']:.4g}/s  "
          f"cv {cv}  targets {len(sm['targets'])}")
    if len(sm["targets"]) > 1:
        rows = sorted(sm["targets"].items(), key=lambda kv: -kv[1]["n"])
        shown = rows if show_all else rows[:20]
        for name, t in shown:
            tcv = "n/a" if t["cv"] is None else f"{t['cv']:.3f}"
            print(f"  {name:<32} n {t['n']:>9}  rate {t['rate_per_s']:>10.4g}/s  cv {tcv}")
        if len(shown) < len(rows):
            print(f"  ... {len(rows) - len(shown)} more (--all)")


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    try:
        if a.cmd == "generate":
            _check_flags(p, a)
            arr = _build(a)
            sha = arr.save(a.out)
            sm = arr.summary()
            if a.json:
                print(json.dumps({"sha256": sha, "file": a.out, **sm}, indent=1))
            else:
                _print_summary(sm, sha, a.out, show_all=False)
        elif a.cmd == "show":
            arr = Arrivals.load(a.file)
            sm = arr.summary()
            if a.json:
                print(json.dumps({"sha256": arr.sha256(), "file": a.file, "meta": arr.meta,
                                  **sm}, indent=1))
            else:
                _print_summary(sm, arr.sha256(), a.file, show_all=a.all)
        else:
            for name, sha in synthetic.write_samples(a.out).items():
                print(f"sha256 {sha}  {Path(a.out) / name}")
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: the file is written, nothing left to say
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
