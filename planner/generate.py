"""``python -m planner.generate``: write a workflow requests YAML for a config.

The seed's workflow generator, as a reproducible tool: Poisson arrivals over
``--duration-s``, workflows drawn by their config ``weight``, per-node
execution times sampled from the models' distributions, one ``--seed``.
The planner CLI's ``--generate N`` uses the same function in memory.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import yaml

from .spec import PlanInputError, load_config
from .workload import generate_requests

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m planner.generate",
        description="Generate workflow requests (GSwarm's YAML format).",
    )
    p.add_argument("--config", type=Path, required=True, help="system configuration JSON")
    p.add_argument("--count", type=int, default=500, help="number of requests (default: 500)")
    p.add_argument(
        "--duration-s", type=float, default=1200.0, help="arrival span, seconds (default: 1200)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", type=Path, required=True, help="requests YAML to write")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = load_config(args.config)
        if args.count < 1:
            raise PlanInputError("--count", "", f"must be >= 1, got {args.count}")
    except PlanInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    requests = generate_requests(config, args.count, seed=args.seed, duration_s=args.duration_s)
    header = (
        f"# {args.count} requests generated from {args.config.name} "
        f"(seed {args.seed}, Poisson arrivals over {args.duration_s:g} s) by\n"
        f"# python -m planner.generate --config {args.config.name} "
        f"--count {args.count} --duration-s {args.duration_s:g} --seed {args.seed} "
        f"--out {args.out.name}\n"
    )
    args.out.write_text(
        header + yaml.safe_dump({"requests": requests}, sort_keys=False), encoding="utf-8"
    )
    mix = Counter(r["workflow_id"] for r in requests)
    print(f"Wrote {len(requests)} requests to {args.out}")
    for wf, n in sorted(mix.items()):
        print(f"  {wf}: {n} ({100.0 * n / len(requests):.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
