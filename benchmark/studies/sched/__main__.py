"""``quart-faas bench sched``: seed 003's centralised-vs-gossip comparison, simulated.

Both schedulers replay the same arrivals (the sha256 printed is the proof) on
identical clusters, then the seed's table is printed; ``--out`` also writes
one CSV per scheduler with the seed's columns (``benchmark.results``) and a
JSON summary with the run details the table leaves out.

The default mix is the repository's measured models (``models.CATALOGUE``):
two MiniLM stages, two BERT-large stages and one OPT-125m decoder, each target
its own gamma stream at the given CV, so bursts of different models overlap
as they would in a shared cluster.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmark.results import summarize
from benchmark.studies.sched.gossip import rounds_to_converge
from benchmark.studies.sched.models import CATALOGUE
from benchmark.studies.sched.report import comparison_rows, format_table
from benchmark.studies.sched.run import run

DEFAULT_MIX = "minilm-stage:2=0.6,bert-large-stage:2=0.36,opt-125m:1=0.04"


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``name[:count]=share,...`` -> [(target, share of the total rate)], shares normalised."""
    out: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"mix entry {part!r}: expected name[:count]=share")
        name, share_s = part.split("=", 1)
        name, _, count_s = name.partition(":")
        if name not in CATALOGUE:
            raise ValueError(f"mix entry {part!r}: unknown model {name!r}; "
                             f"known: {sorted(CATALOGUE)}")
        try:
            count, share = int(count_s or 1), float(share_s)
        except ValueError:
            raise ValueError(f"mix entry {part!r}: count must be an integer and share a "
                             "number") from None
        if count < 1 or not (math.isfinite(share) and share > 0):
            raise ValueError(f"mix entry {part!r}: count >= 1 and share > 0 required")
        names = [name] if count == 1 else [f"{name}-{i}" for i in range(count)]
        out += [(t, share / count) for t in names]
    if not out:
        raise ValueError("the mix is empty")
    if len({t for t, _ in out}) != len(out):
        raise ValueError("a model appears twice in the mix")
    total = sum(s for _, s in out)
    return [(t, s / total) for t, s in out]


def mixed_gamma(rps: float, cv: float, duration_s: float, mix: list[tuple[str, float]],
                seed: int) -> Any:
    """One gamma stream per target (rate = share x rps, same CV), merged."""
    from benchmark.workloads.arrivals import merge
    from benchmark.workloads.generators import gamma

    parts = [gamma(rps * share, cv, duration_s, seed=seed * 1000 + k, target=t)
             for k, (t, share) in enumerate(mix)]
    return merge(*parts, name=f"sched-mix-rps{rps:g}-cv{cv:g}-{duration_s:g}s-seed{seed}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quart-faas bench sched",
                                description="Centralised vs gossip scheduling of models over a "
                                            "cluster, simulated on identical arrivals.")
    p.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--rps", type=float, default=5.0, help="mean requests/s (default 5)")
    p.add_argument("--cv", type=float, default=8.0, help="inter-arrival CV (default 8)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--memory-mib", type=float, default=768.0,
                   help="model memory per node (default 768: the default mix's models fit "
                        "on n-1 nodes, so recovery after one failure is possible)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"name[:count]=share,... "
                                                      f"(default {DEFAULT_MIX})")
    p.add_argument("--arrivals", type=Path, help="replay a saved workload instead")
    p.add_argument("--slo-ms", type=float, default=5000.0,
                   help="latency SLO (default 5000: above the OPT-125m decoder's 3.5 s mean "
                        "service, which a tighter SLO would make every p99 window miss)")
    p.add_argument("--fail-at", type=float, help="kill a node at this time (s)")
    p.add_argument("--fail-node", help="which node (default node-0, the coordinator's host)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="scheduler_comparison")
    p.add_argument("--out", type=Path, help="write CSVs and a JSON summary here")
    p.add_argument("--convergence", action="store_true",
                   help="only measure gossip convergence (push-pull rounds until all n "
                        "nodes hold one node's update) against log3 n + ln ln n")
    return p


def convergence_table(sizes: tuple[int, ...] = (4, 16, 64, 256), seeds: int = 10,
                      fanout: int = 1) -> str:
    """Measured push-pull rounds (mean / max over seeds) next to Karp et al.'s estimate."""
    lines = [f"{'nodes':>6} {'mean rounds':>12} {'max':>5} {'log3 n + ln ln n':>18}"]
    for n in sizes:
        r = [rounds_to_converge(n, fanout, s) for s in range(seeds)]
        ref = math.log(n, 3) + math.log(math.log(n))
        lines.append(f"{n:>6} {sum(r) / len(r):>12.1f} {max(r):>5} {ref:>18.2f}")
    return "\n".join(lines)


def _print_extras(results: dict[str, Any]) -> None:
    """One line per scheduler: loads, evictions, timeouts and its own counters."""
    for s, r in results.items():
        x = r.extra
        line = (f"{s}: {x['loads']} loads, {x['evictions']} evictions, {x['timeouts']} "
                f"timeouts, simulated in {x['wall_s']:.2f} s")
        if s == "central" and x.get("coordinator_downtime"):
            line += f"; coordinator down {x['coordinator_downtime']}"
        if s == "gossip":
            age = x["view_age_s"]
            line += (f"; {x['gossip_messages']} gossip messages, peer view age mean "
                     f"{age.get('mean', math.nan) * 1e3:.0f} ms / p99 "
                     f"{age.get('p99', math.nan) * 1e3:.0f} ms")
        if "fail_at_s" in x:
            line += (f"; {x['fail_node']} failed at {x['fail_at_s']:g} s with "
                     f"{x['failed_at_crash']} requests on it")
        print(line)


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    if a.convergence:
        print("push-pull gossip, fanout 1, 10 seeds "
              "(benchmark.studies.sched.gossip.rounds_to_converge)")
        print(convergence_table())
        return 0
    try:
        if a.arrivals:
            from benchmark.workloads.arrivals import Arrivals
            arrivals = Arrivals.load(a.arrivals)
        else:
            for flag, v in (("--duration", a.duration), ("--rps", a.rps), ("--cv", a.cv)):
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"{flag} must be > 0")
            arrivals = mixed_gamma(a.rps, a.cv, a.duration, parse_mix(a.mix), a.seed)
        if not (math.isfinite(a.slo_ms) and a.slo_ms > 0):
            raise ValueError("--slo-ms must be > 0")
        results = {s: run(arrivals, s, nodes=a.nodes, slo_s=a.slo_ms / 1000.0,
                          fail_at=a.fail_at, seed=a.seed, memory_mib=a.memory_mib,
                          fail_node=a.fail_node)
                   for s in ("central", "gossip")}
    except (ValueError, OSError) as e:
        p.error(str(e))
    print(f"workload {arrivals.meta.get('name')}: {len(arrivals.times_s)} requests, "
          f"sha256 {arrivals.sha256()}")
    rows = {s: summarize(r, a.name) for s, r in results.items()}
    print(format_table(comparison_rows(rows["central"], rows["gossip"])))
    _print_extras(results)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        label = {"central": "centralized", "gossip": "gossip"}
        for s, row in rows.items():
            path = a.out / f"{a.name}_{label[s]}_{stamp}.csv"
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                w.writeheader()
                w.writerow(row)
        summary = {"workload_sha256": arrivals.sha256(), "argv": sys.argv[1:] if argv is None
                   else argv, "summary": rows,
                   "extra": {s: r.extra for s, r in results.items()}}
        (a.out / f"{a.name}_{stamp}.json").write_text(
            json.dumps(summary, indent=2, default=str) + "\n")
        print(f"wrote {a.out}/{a.name}_*_{stamp}.csv and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
