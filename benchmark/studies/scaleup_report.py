"""The scale-up study's verdict and printout (scaleup.py measures): targets judged from
the medians, and one table per model."""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def judge(res: dict[str, Any]) -> None:
    t, warm = res["tiers"], pct(res["warm_ms"], 50)
    res["warm_p50_ms"] = warm
    res["ratio_cold_t0_ready"] = t["cold"]["ready_p50_ms"] / t["T0"]["ready_p50_ms"]
    res["ratio_cold_t0_first"] = t["cold"]["first_p50_ms"] / t["T0"]["first_p50_ms"]
    res["t0_first_minus_warm_ms"] = t["T0"]["first_p50_ms"] - warm
    mem = res["memory"]
    mem["pss_per_extra_pct"] = 100 * mem["pss_per_extra_bytes"] / res["parameter_bytes"]
    res["targets"] = {
        "T0 time to ready p50 <= 50 ms": (f"{t['T0']['ready_p50_ms']:.1f} ms",
                                          t["T0"]["ready_p50_ms"] <= 50),
        "cold/T0 time to ready >= 100x": (f"{res['ratio_cold_t0_ready']:.0f}x",
                                          res["ratio_cold_t0_ready"] >= 100),
        "T0 first response <= warm + 50 ms": (
            f"{t['T0']['first_p50_ms']:.1f} vs {warm + 50:.1f} ms",
            t["T0"]["first_p50_ms"] <= warm + 50),
        "PSS per extra replica <= 5% of params": (f"{mem['pss_per_extra_pct']:.1f}%",
                                                  mem["pss_per_extra_pct"] <= 5)}


def report(res: dict[str, Any], trials: int) -> None:
    mb = 1 / 2**20
    print(f"\n{res['model']}, stage {res['stage']} of {res['stages']} "
          f"({res['parameters'] / 1e6:.1f}M parameters, {res['parameter_bytes'] * mb:.1f} MiB), "
          f"{trials} trials per tier, batch 1 x 32 tokens\n")
    print(f"{'tier':<5} {'ready p50':>10} {'ready p95':>10} {'first p50':>10} {'first p95':>10} "
          f"{'n':>3} {'1st call p50':>13}   (ms)")
    for tier, d in res["tiers"].items():
        print(f"{tier:<5} {d['ready_p50_ms']:10.1f} {d['ready_p95_ms']:10.1f} "
              f"{d['first_p50_ms']:10.1f} {d['first_p95_ms']:10.1f} {len(d['ready_ms']):3d} "
              f"{d['first_call_p50_ms']:13.1f}")
        if d["tier_mismatches"]:
            print(f"      ! {d['tier_mismatches']} trial(s) were made by another tier: "
                  f"{sorted(set(map(str, d['tier'])))}")
    mem = res["memory"]
    print(f"\nwarm inference p50 (replica already running): {res['warm_p50_ms']:.1f} ms "
          f"over {len(res['warm_ms'])} requests")
    print(f"cold/T0: time to ready {res['ratio_cold_t0_ready']:.0f}x, first response "
          f"{res['ratio_cold_t0_first']:.0f}x (p50s)")
    print(f"T0 first response - warm inference: {res['t0_first_minus_warm_ms']:.1f} ms")
    print(f"node load (1-min average) at start / end: {res['loadavg_1m'][0]:.1f} / "
          f"{res['loadavg_1m'][1]:.1f} on {os.cpu_count()} CPUs")
    print(f"PSS per extra replica: {mem['pss_per_extra_bytes'] * mb:.1f} MiB = "
          f"{mem['pss_per_extra_pct']:.1f}% of the stage's parameters (zygote + replicas: "
          f"{mem['one']['total']['Pss'] * mb:.0f} MiB with 1, "
          f"{mem['five']['total']['Pss'] * mb:.0f} MiB with 5; "
          f"{mem['replicas_forked_from_zygote']}/5 forked from the zygote)")
    print(f"  {'pid':>8} {'Pss MiB':>8} {'Rss MiB':>8}")
    for pid, d in mem["five"].items():
        role = " (zygote)" if pid == str(mem["zygote_pid"]) else ""
        print(f"  {pid:>8} {d['Pss'] * mb:8.1f} {d['Rss'] * mb:8.1f}{role}")
    print("targets:")
    for what, (value, ok) in res["targets"].items():
        print(f"  {what:<40} {value:>18}  {'met' if ok else 'MISSED'}")
