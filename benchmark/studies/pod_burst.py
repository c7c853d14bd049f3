"""A burst on a pipeline in pod mode: the plugin scales workers, CPU and pods, in that order.

Why: on Kubernetes a stage's replicas are workers inside pods (issue 14, docs/cluster.md).
The plugin's ``pods``/``kubernetes`` actuator meets a target with the fastest means that
has room: a worker forked in a pod whose CPU covers it, then the pod's CPU raised in place
and a worker forked, and only once the pods hold ``QUART_POD_MAX_WORKERS`` workers, more
pods.  This run shows it acting on real pods (benchmark/live/pods.py: ``QUART_LAUNCHER=pod``,
the real fwatchdog, Redis, Prometheus and the plugin as processes) and prints, every
``--bucket`` seconds: the offered rate, each pod's workers and CPU limit, the latency of the
requests sent then (p50/p99), and the speeds the plugin's decisions used.

Baseline in the same run (``--baseline``, on by default): the same burst with
``QUART_ACTUATOR=gateway``, the plugin scaling pods of one worker each (a new pod per
replica, as a plain autoscaler on faas-netes does), its pods capped at CE's 5.

Defaults: one emulated BERT-large stage (24 layers, ~0.27 s a request on the ``cpu``
profile; a sleep, so workers are capacity on a 2-core host), limits.cpu 500m and 250m
per worker (2 workers fit, the 3rd needs a resize), at most 3 workers per pod and 3 pods.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import openloop
from benchmark.live.pods import PodSample, RigConfig, burst_offsets, pod_rig

SPEEDS = ("workers", "cpu", "pods")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    start: float  # rig time of offset 0
    offsets: np.ndarray
    results: list[openloop.Result]
    samples: list[PodSample]
    decisions: list[dict[str, Any]]


def _pct(lat: Sequence[float], q: float) -> float:
    return float(np.percentile(lat, q)) * 1e3 if len(lat) else float("nan")


def pods_at(samples: list[PodSample], t: float) -> dict[str, list[PodSample]]:
    """The last sampling round at or before ``t``: each function's ready pods."""
    times = sorted({s.t for s in samples if s.t <= t})
    if not times:
        return {}
    out: dict[str, list[PodSample]] = defaultdict(list)
    for s in samples:
        if s.t == times[-1] and s.ready:
            out[s.function].append(s)
    return out


def table(run: Run, bucket_s: float) -> list[dict[str, Any]]:
    """One row per bucket of send time: offered rate, pods (workers@CPU), p50/p99 of the
    requests planned in it, and the speeds the decisions made in it used."""
    rows = []
    end = float(run.offsets.max()) if len(run.offsets) else 0.0
    for b0 in np.arange(0.0, end + 1e-9, bucket_s):
        b1 = b0 + bucket_s
        sent = [r for r in run.results if b0 <= r.planned_s < b1]
        ok = [r.latency_s for r in sent if r.status == 200]
        pods = pods_at(run.samples, run.start + b1)
        speeds = {s for d in run.decisions if run.start + b0 <= d["t"] < run.start + b1
                  for s in d.get("speeds") or ()}
        rows.append({
            "t_s": round(float(b0), 1), "rps": len(sent) / bucket_s,
            "pods": sum(len(v) for v in pods.values()),
            "workers": sum(s.workers or 0 for v in pods.values() for s in v),
            "detail": " ; ".join(" ".join(f"{s.workers if s.workers is not None else '?'}@"
                                          f"{s.cpu_millis if s.cpu_millis else '-'}m"
                                          for s in sorted(v, key=lambda s: s.pod))
                                 for _, v in sorted(pods.items())),
            "p50_ms": _pct(ok, 50), "p99_ms": _pct(ok, 99), "errors": len(sent) - len(ok),
            "speeds": "+".join(s for s in SPEEDS if s in speeds)})
    return rows


def render(run: Run, rows: list[dict[str, Any]]) -> str:
    head = (f"{'t (s)':>6} {'req/s':>6} {'pods':>4} {'workers':>7}  {'p50 ms':>7} "
            f"{'p99 ms':>7} {'err':>3}  {'speeds':<17} pods as workers@CPU")
    lines = [f"== {run.name}", head]
    for r in rows:
        lines.append(f"{r['t_s']:>6.1f} {r['rps']:>6.1f} {r['pods']:>4} {r['workers']:>7}  "
                     f"{r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} {r['errors']:>3}  "
                     f"{r['speeds']:<17} {r['detail']}")
    return "\n".join(lines)


def summary(run: Run) -> dict[str, Any]:
    """Whole-run latency, and when each speed was first used (s after the first request)."""
    ok = [r.latency_s for r in run.results if r.status == 200]
    first = {s: next((round(d["t"] - run.start, 1) for d in run.decisions
                      if s in (d.get("speeds") or ())), None) for s in SPEEDS}
    codes = Counter(r.status if r.status else r.error for r in run.results)
    ctl = [s.control_ms for s in run.samples if s.control_ms is not None]
    cycles = np.diff(sorted({round(d["t"], 3) for d in run.decisions if d.get("function")}))
    return {"requests": len(run.results), "ok": len(ok), "p50_ms": _pct(ok, 50),
            "answers": {str(k): v for k, v in sorted(codes.items(), key=str)},
            "p99_ms": _pct(ok, 99), "first_use_s": first,
            # the control port is served by the pod's zygote, apart from the calls
            "control_get_ms": {"p50": _pct([c / 1e3 for c in ctl], 50),
                               "max": max(ctl, default=float("nan"))},
            "cycle_gap_s": {"median": float(np.median(cycles)) if len(cycles) else None,
                            "max": float(cycles.max()) if len(cycles) else None},
            "max_pods": max(Counter(s.t for s in run.samples if s.ready).values(), default=0)}


def burst(cfg: RigConfig, state: Path, name: str, offsets: np.ndarray,
          plugin_env: dict[str, str] | None = None,
          say: Callable[[str], None] = print) -> Run:
    with pod_rig(cfg, state, say=lambda m: None, plugin_extra=plugin_env) as rig:
        say(f"{name}: deployed {', '.join(rig.functions)} as pods; sending "
            f"{len(offsets)} requests over {offsets.max():.0f} s")
        rig.send(np.arange(3) * 0.5)  # warm-up: the same for every run, not counted
        start, results = rig.send(offsets)
        assert rig.watcher is not None
        return Run(name, start, offsets, results, list(rig.watcher.samples), rig.decisions())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-rps", type=float, default=2.0)
    ap.add_argument("--burst-rps", type=float, default=14.0)
    ap.add_argument("--before", type=float, default=4.0, help="seconds at the base rate")
    ap.add_argument("--burst", type=float, default=20.0, help="seconds at the burst rate")
    ap.add_argument("--after", type=float, default=10.0, help="seconds at the base rate")
    ap.add_argument("--cv", type=float, default=2.0, help="arrival CV (gamma)")
    ap.add_argument("--bucket", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-baseline", dest="baseline", action="store_false")
    ap.add_argument("--state-dir", type=Path, help="default: a temporary directory")
    ap.add_argument("--json", type=Path, help="write the rows and summaries here")
    args = ap.parse_args(argv)
    cfg = RigConfig()
    offsets = burst_offsets(args.base_rps, args.burst_rps, args.before, args.burst,
                            args.after, args.cv, args.seed)
    runs = []
    with tempfile.TemporaryDirectory(prefix="pod-burst-") as tmp:
        root = args.state_dir or Path(tmp)
        runs.append(burst(cfg, root / "pods", "pods: workers, CPU in place, then pods",
                          offsets))
        if args.baseline:
            base = dataclasses.replace(cfg, max_workers=1, max_pods=min(
                5, cfg.max_pods * cfg.max_workers))
            runs.append(burst(base, root / "gateway", "baseline: a new pod per replica "
                              "(QUART_ACTUATOR=gateway, 1 worker each)", offsets,
                              {"QUART_ACTUATOR": "gateway"}))
    doc: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    for run in runs:
        rows = table(run, args.bucket)
        print(render(run, rows))
        s = summary(run)
        print(f"   {s['ok']}/{s['requests']} ok {s['answers']}, p50 {s['p50_ms']:.0f} ms, p99 "
              f"{s['p99_ms']:.0f} ms, at most {s['max_pods']} pod(s); first used "
              f"(s after the first request): " + ", ".join(f"{k} {v}" for k, v in
                                                   s["first_use_s"].items()))
        print(f"   control GET p50 {s['control_get_ms']['p50']:.0f} ms, max "
              f"{s['control_get_ms']['max']:.0f} ms; plugin cycle every "
              f"{s['cycle_gap_s']['median']:.1f} s (max {s['cycle_gap_s']['max']:.1f} s)")
        doc["runs"].append({"name": run.name, "rows": rows, "summary": s, "decisions": [
            {k: d.get(k) for k in ("t", "function", "from", "replicas", "cpu", "policy",
                                   "speeds", "actuation", "reason")}
            for d in run.decisions if d.get("function")]})
    if len(runs) == 2:
        a, b = (summary(r) for r in runs)
        print(f"p99 pods/baseline = {a['p99_ms'] / b['p99_ms']:.2f}, "
              f"p50 pods/baseline = {a['p50_ms'] / b['p50_ms']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
