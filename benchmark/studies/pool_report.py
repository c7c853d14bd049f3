"""The pool study's verdict and printout (pool.py measures): each figure beside its goal,
every ratio from this run's own baselines."""
from __future__ import annotations

import os
from typing import Any

from benchmark.studies.scaleup_report import pct

MIB = 1 / 2**20


def judge(res: dict[str, Any]) -> None:
    t = res["trials"]
    p50 = {k: {m: pct([r[m] for r in t[k]], 50) for m in ("ready_ms", "first_ms",
                                                           "first_call_ms")}
           for k in ("pool", "fork", "cold")}
    warm = pct([r["ms"] for r in t["warm"]], 50)
    gw_warm = pct(res["gateway_warm_ms"], 50)
    wake = pct([z["wake_ms"] for z in res["zero"]], 50)
    ratio = p50["cold"]["ready_ms"] / p50["pool"]["ready_ms"]
    res["p50"], res["warm_p50_ms"], res["gateway_warm_p50_ms"] = p50, warm, gw_warm
    res["wake_p50_ms"], res["ratio_cold_pool_ready"] = wake, ratio
    res["targets"] = {
        "pool ready p50 <= 5 ms": (f"{p50['pool']['ready_ms']:.1f} ms",
                                   p50["pool"]["ready_ms"] <= 5),
        "cold/pool ready >= 300x": (f"{ratio:.0f}x", ratio >= 300),
        "pool first response <= warm + 10 ms": (
            f"{p50['pool']['first_ms']:.1f} vs {warm + 10:.1f} ms",
            p50["pool"]["first_ms"] <= warm + 10),
        "wake from zero <= warm (gateway) + 50 ms": (f"{wake:.1f} vs {gw_warm + 50:.1f} ms",
                                                     wake <= gw_warm + 50)}


def report(res: dict[str, Any]) -> None:
    t, p50 = res["trials"], res["p50"]
    print(f"\n{res['model']}, stage {res['stage']} of {res['stages']}, batch 1 x 32 tokens; "
          f"{len(t['pool'])} rounds (cold: {len(t['cold'])}); load (1 min) "
          f"{' / '.join(f'{x:.2f}' for x in res['load_1m'])} on {os.cpu_count()} CPUs\n")
    print(f"{'how':<5} {'ready p50':>10} {'ready p95':>10} {'1st call p50':>13} "
          f"{'first p50':>10} {'first p95':>10}   (ms, from the scale call)")
    for k in ("pool", "fork", "cold"):
        rs = t[k]
        print(f"{k:<5} {p50[k]['ready_ms']:10.1f} {pct([r['ready_ms'] for r in rs], 95):10.1f} "
              f"{p50[k]['first_call_ms']:13.1f} {p50[k]['first_ms']:10.1f} "
              f"{pct([r['first_ms'] for r in rs], 95):10.1f}")
    missed = [r for r in t["pool"] if not r["pooled"] or not r["as_guessed"]]
    if missed:
        print(f"      ! {len(missed)} pool trial(s) were not a hand-over of the idle worker")
    prov = pct([r["provider_ready_ms"] or 0.0 for r in t["pool"]], 50)
    spawn = pct([r["spawn_ms"] or 0.0 for r in t["pool"]], 50)
    print(f"pool: keys_manager hand-over p50 {spawn:.2f} ms, provider launch-to-ready p50 "
          f"{prov:.2f} ms (the rest is the scale call, reconcile and the poll)")
    print(f"warm inference p50 {res['warm_p50_ms']:.1f} ms (straight to a replica), "
          f"{res['gateway_warm_p50_ms']:.1f} ms through the gateway")
    wake = res["zero"]
    print(f"wake from zero to first response through the gateway: p50 {res['wake_p50_ms']:.1f}"
          f" ms, p95 {pct([z['wake_ms'] for z in wake], 95):.1f} ms over {len(wake)} wakes")
    held = wake[-1]["held"]
    pool_pss = res["pool_status"]["pss_bytes"]
    print(f"memory: the pool's idle worker(s) {sum(pool_pss.values()) * MIB:.1f} MiB PSS; an "
          f"idle stage at zero holds its zygote ({held['zygote_pss'] * MIB:.1f} MiB PSS, "
          f"{held['zygote_uss'] * MIB:.1f} MiB private), {held['workers']} pooled worker(s) "
          f"({held['pool_pss'] * MIB:.1f} MiB PSS, {held['pool_uss'] * MIB:.1f} MiB private) "
          f"and its T1 segment ({held['t1_bytes'] * MIB:.1f} MiB, shared, counted in the PSS "
          f"where mapped; {res['parameter_bytes'] * MIB:.1f} MiB of parameters)")
    print("targets:")
    for what, (value, ok) in res["targets"].items():
        print(f"  {what:<42} {value:>20}  {'met' if ok else 'MISSED'}")
