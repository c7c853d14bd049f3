"""How long one full control cycle of the gateway plugin takes at 1,000 stages.

Why: the plugin decides for every annotated pipeline in one pass every
``QUART_CONTROL_PERIOD_S`` (5 s); at the issue's scale (250 pipelines x 4
stages) a cycle must stay well inside the period.  Target: p50 <= 100 ms.

Real: ``Controller.cycle`` unchanged, the policies, and a ``redis-server`` on a
free port (leader lock, history, state, decisions).  Replayed: the gateway is a
``Gateway`` whose HTTP call answers a recorded ``GET /system/functions`` body
(FunctionStatus JSON with the replicas/CPU the plugin set, re-serialised between
cycles, so the cycle still parses ~1,000 functions), and scale/set-CPU requests
are recorded; Prometheus is ``PrometheusReader`` whose ``prom.custom_query``
parses recorded ``/api/v1/query`` bodies, generated up front (untimed) from a
seeded random walk of arrival rates and CVs, so decisions change between cycles.
Only the network and the servers' own work are left out of the timed cycle.

The breakdown comes from extra ``--instrumented`` cycles with the component
calls wrapped in timers, never from the timed ones.  ``--train`` times one GAT
training on the history left in Redis (not part of a cycle: train_every=0 here).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.studies import cycle_inputs
from gateway_plugin import controller, observe
from gateway_plugin.metrics_in import QUERIES
from gateway_plugin.policies import chain
from local_provider import plugin_services, services

TARGET_P50_MS = 100.0
GC_S = [0.0, 0.0]  # [seconds spent in the garbage collector, start of the current pass]


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        GC_S[1] = time.perf_counter()
    else:
        GC_S[0] += time.perf_counter() - GC_S[1]


PHASES = {  # label -> the attribute wrapped in a timer ("  of which" rows are nested)
    "redis: leader lock": "store.lead",
    "gateway: list + parse functions": "gw.functions",
    "gateway: pipeline discovery": "gw.pipelines",
    "prometheus: read (parse + fold + combine)": "reader.read",
    "  of which: parse the recorded bodies": "reader.prom.custom_query",
    "observe.build (all pipelines)": "observe.build",
    "chain.decide": "chain.decide",
    "  of which: CV predictor": "chain._predict_cvs",
    "actuation + decision records (_apply)": "ctl._apply",
    "history to JSON (observation_json)": "controller.observation_json",
    "redis: add_history (once per pipeline)": "store.add_history",
    "state to JSON (_state_doc)": "ctl._state_doc",
    "redis: save_state": "store.save_state",
    "redis: record_decisions": "store.record_decisions",
}


@contextlib.contextmanager
def instrumented(ctl: controller.Controller, acc: dict[str, float]) -> Iterator[None]:
    """Wrap every PHASES attribute in a timer adding to ``acc``; put them back after."""
    roots = {"gw": ctl.gw, "reader": ctl.reader, "store": ctl.store, "ctl": ctl,
             "observe": observe, "chain": chain, "controller": controller}
    undo = []
    for label, path in PHASES.items():
        *head, attr = path.split(".")
        obj = functools.reduce(getattr, head[1:], roots[head[0]])
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def timed(*a: Any, _fn: Any = fn, _label: str = label, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                acc[_label] = acc.get(_label, 0.0) + time.perf_counter() - t0
        undo.append((obj, attr, vars(obj).get(attr)))
        setattr(obj, attr, timed)
    try:
        yield
    finally:
        for obj, attr, orig in reversed(undo):
            if orig is None:
                delattr(obj, attr)  # was the class' method: fall back to it
            else:
                setattr(obj, attr, orig)


def run(predictor: str, bodies: list[dict[str, Any]], prom: list[dict[str, bytes]],
        redis_url: str, args: argparse.Namespace, train: bool) -> dict[str, Any]:
    rp = cycle_inputs.replay(bodies, prom, redis_url, predictor)
    ctl, gw = rp.ctl, rp.gw

    def one() -> tuple[float, float, int, int, float]:
        rp.prepare()
        s0, p0 = gw.scales, gw.cpus
        GC_S[0] = 0.0
        c0, t0 = time.process_time(), time.perf_counter()
        out = ctl.cycle()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out.get("pipelines") == len(bodies) // args.stages_per_pipeline, out
        assert {d["predictor"] for d in out["decisions"]} == {predictor}, out["decisions"][0]
        return dt, cpu, gw.scales - s0, gw.cpus - p0, GC_S[0]

    for _ in range(args.warmup):
        one()
    timed = [one() for _ in range(args.cycles)]
    ms, cpu_ms, gc_ms = (np.array([t[i] for t in timed]) * 1e3 for i in (0, 1, 4))
    acc: dict[str, float] = {}
    with instrumented(ctl, acc):
        t_instr = sum(one()[0] for _ in range(args.instrumented))
    n = max(1, args.instrumented)
    breakdown = {k: acc.get(k, 0.0) / n * 1e3 for k in PHASES}
    top = sum(v for k, v in breakdown.items() if not k.startswith(" "))
    breakdown["other (cycle - phases)"] = t_instr / n * 1e3 - top
    breakdown["cycle (instrumented)"] = t_instr / n * 1e3
    row: dict[str, Any] = {
        "predictor": predictor, "cycles": len(ms),
        **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)},
        "max_ms": float(ms.max()),
        "process_cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
        "gc_mean_ms": float(gc_ms.mean()), "gc_max_ms": float(gc_ms.max()),
        "scale_calls_per_cycle": float(np.mean([t[2] for t in timed])),
        "set_cpu_calls_per_cycle": float(np.mean([t[3] for t in timed])),
        "breakdown_ms": breakdown}
    row["target_met"] = row["p50_ms"] <= TARGET_P50_MS
    if train:
        t0 = time.perf_counter()
        errors = ctl.train()
        row["train"] = {"seconds": time.perf_counter() - t0, "history": len(ctl.store.history()),
                        "validation_mae": errors}
    return row


def _print_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The cycle times per predictor, where the time goes, and the training time."""
    cols = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("max", "max_ms"),
            ("cpu p50", "process_cpu_p50_ms"), ("gc mean", "gc_mean_ms"),
            ("gc max", "gc_max_ms"), ("scale/c", "scale_calls_per_cycle"),
            ("set_cpu/c", "set_cpu_calls_per_cycle")]
    print(f"\nfull control cycle, {args.warmup} warm-up + {args.cycles} timed cycles (ms)")
    print(f"{'predictor':<10}{'cycles':>7}" + "".join(f"{c:>10}" for c, _ in cols)
          + f"  p50 <= {TARGET_P50_MS:.0f} ms")
    for r in rows:
        print(f"{r['predictor']:<10}{r['cycles']:>7}" + "".join(f"{r[k]:>10.1f}" for _, k in cols)
              + f"  {'met' if r['target_met'] else 'MISSED'}")
    print("(cpu: this process' CPU time per cycle, all threads, Redis' own work excluded; "
          "gc: time in Python's garbage collector within a cycle)")
    print(f"\nwhere the time goes: mean ms per cycle over {args.instrumented} instrumented cycles")
    print(f"{'phase':<42}" + "".join(f"{r['predictor']:>9}" for r in rows))
    for k in rows[0]["breakdown_ms"]:
        print(f"{k:<42}" + "".join(f"{r['breakdown_ms'][k]:>9.1f}" for r in rows))
    for r in (r for r in rows if "train" in r):
        t = r["train"]
        mae = ", ".join(f"{k} {v:.3f}" for k, v in (t["validation_mae"] or {}).items())
        print(f"\nGAT training (after the {r['predictor']} run; not part of a cycle): "
              f"{t['seconds']:.1f} s on {t['history']} stored observations; "
              f"validation MAE {mae or '-'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", type=int, default=1000)
    ap.add_argument("--stages-per-pipeline", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--instrumented", type=int, default=10, help="cycles of the breakdown run")
    ap.add_argument("--predictors", default="qna,gat")
    ap.add_argument("--train", action="store_true", help="also time one GAT training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after start-up, as the plugin could (see the report)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    gc.callbacks.append(_gc_timer)
    spp = args.stages_per_pipeline
    n_pipes = math.ceil(args.stages / spp)
    rng = np.random.default_rng(args.seed)
    bodies, svc = cycle_inputs.function_bodies(n_pipes, spp, rng)
    t0 = time.perf_counter()
    prom = cycle_inputs.record_prometheus(svc, args.warmup + args.cycles + args.instrumented, rng)
    print(f"{n_pipes} pipelines x {spp} stages = {len(bodies)} functions; recorded "
          f"{len(prom)} cycles x {len(QUERIES)} Prometheus responses "
          f"({sum(map(len, prom[0].values())) / 1e3:.0f} kB/cycle) in "
          f"{time.perf_counter() - t0:.1f} s (untimed)")
    if args.gc_freeze:  # ~200k objects from torch & co. make a full collection cost ~100 ms
        gc.collect()
        gc.freeze()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
        url = f"redis://127.0.0.1:{services.free_port()}/0"  # a redis-server of our own
        try:
            url = plugin_services.ensure_redis(Path(tmp), url, lambda _msg: None)
            names = args.predictors.split(",")
            for i, predictor in enumerate(names):  # train once, after the last run
                rows.append(run(predictor, bodies, prom, url, args,
                                args.train and i == len(names) - 1))
        finally:
            for rec in services.recorded(Path(tmp)):
                services.stop(Path(tmp), rec)
    _print_rows(rows, args)
    if args.json:
        args.json.write_text(json.dumps({"stages": len(bodies), "pipelines": n_pipes,
                                         "target_p50_ms": TARGET_P50_MS, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
