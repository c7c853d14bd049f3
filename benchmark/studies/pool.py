"""Replicas ready before they are asked for, and scale to zero that costs nothing to wake.

Why: a replica forked from the warm zygote on the scale call is ready in tens of ms
(``scaleup``); keys_manager's warm pool (keys_manager/pool.py) forks it *before* the call,
so the scale call only hands an idle, already-serving worker over.  With that, a stage
can drop to zero replicas while idle (keeping its zygote and one pooled worker) and wake
on its next request at little more than the price of the request.

One run, one provider, one stage (the last of the model, which calls no other function):

  pool   with one replica serving and one pooled worker idle, POST scale-function to 2 at
         t0; time to ready = until the provider reports 2 available (polled back to back);
         then one stage request to the new replica (its URL is the pooled worker's, known
         before t0, as a gateway knows its replicas): first response = ready + that call
  fork   the same with the pool emptied (``pool`` op, size 0): forked on the call (T0)
  cold   a fresh python process loading the stage from the partition (the baseline)
  warm   the same request to the replica that was already running
  zero   scale to 0 (the zygote and the pooled worker stay), then one request through the
         gateway's /function/NAME at t0: it is held while a replica wakes, then served;
         against the next request through the gateway (warm: the replica is up)
  memory PSS of the pooled worker(s), of the zygote, and the T1 segment an idle stage holds

Tiers are interleaved round by round (pool, fork; cold every ``--cold-every`` rounds) so that
drift hits all alike.  Goals (issue 17): pool ready p50 <= 5 ms from the scale call, cold /
pool ready >= 300x, pool first response <= warm inference + 10 ms, wake from zero to first
response <= warm (through the gateway) + 50 ms p50.  The 1-minute load average is printed
beside the figures: the machine's cores are shared.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmark import procmem
from benchmark.studies import scaleup as su
from benchmark.studies.pool_report import judge, report
from local_provider.auth import BasicAuth

POLL_S = 0.0005


def ready_time(b: su.Bench, name: str, n: int, t0: float) -> float:
    """Seconds from ``t0`` until ``n`` replicas are available (polled back to back)."""
    while b.available(name) != n:
        if time.perf_counter() - t0 > su.TIMEOUT_S:
            raise TimeoutError(f"{name}: not {n} replica(s) after {su.TIMEOUT_S:g}s")
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def pool_idle(b: su.Bench, name: str) -> list[dict[str, Any]]:
    return list(b.status()["pool"]["idle"].get(name, []))


def wait_pool(b: su.Bench, name: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while (idle := pool_idle(b, name)) and len(idle) != n or not idle and n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: the pool did not reach {n} idle worker(s)")
        time.sleep(0.01)
    return idle


def quick_trial(b: su.Bench, name: str, base: dict[str, Any], body: bytes,
                pooled: bool) -> dict[str, Any]:
    """Scale 1 -> 2, the new replica's first answer, scale back; see the module's doc."""
    guess = wait_pool(b, name, 1)[0] if pooled else None
    t0 = time.perf_counter()
    b.scale(name, 2)
    ready_s = ready_time(b, name, 2, t0)
    new = next((r for r in b.replicas(name) if r["pid"] != base["pid"]), None) \
        if guess is None else None
    url = guess["url"] if guess is not None else new["url"] if new else ""
    first_call = b.call(url, body)
    reps = [r for r in b.replicas(name) if r["pid"] != base["pid"]]
    if not reps:
        raise RuntimeError(f"{name}: keys_manager does not list the new replica")
    new = reps[0]
    info = next((i for i in b.instances(name) if i.get("pid") == new["pid"]), {})
    b.scale(name, 1)
    b.wait(name, 1, gone=(new["pid"], new.get("started")))
    return {"ready_ms": ready_s * 1e3, "first_call_ms": first_call,
            "first_ms": ready_s * 1e3 + first_call, "pooled": bool(info.get("pooled")),
            "as_guessed": guess is None or guess["pid"] == new["pid"],
            "spawn_ms": info.get("spawn_ms"), "provider_ready_ms": info.get("ready_ms")}


def wake_trial(b: su.Bench, name: str, body: bytes) -> dict[str, Any]:
    """From zero replicas (zygote and pool kept) to the first answer through the gateway."""
    reps = b.replicas(name)
    b.scale(name, 0)
    for r in reps:
        b.wait(name, 0, gone=(r["pid"], r.get("started")))
    wait_pool(b, name, 1)
    held = idle_memory(b, name)
    wake = gateway_call(b, name, body)
    return {"wake_ms": wake, "warm_ms": gateway_call(b, name, body), "held": held}


def idle_memory(b: su.Bench, name: str) -> dict[str, int]:
    """What a stage at zero replicas still holds: zygote, pooled workers, its T1 segment."""
    st = b.status()
    z = next(z for z in st["zygotes"] if z["function"] == name and z["alive"])
    workers = [w["pid"] for w in st["pool"]["idle"].get(name, [])]

    def uss(pid: int) -> int:
        r = procmem.rollup(pid)
        return r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)

    seg: dict[str, Any] = st["cache"].get("entries", {}).get(z["stage"], {})
    return {"zygote_pss": procmem.pss_bytes(z["pid"]), "zygote_uss": uss(z["pid"]),
            "pool_pss": sum(procmem.pss_bytes(p) for p in workers),
            "pool_uss": sum(uss(p) for p in workers), "workers": len(workers),
            "t1_bytes": int(seg.get("bytes", 0))}


def gateway_call(b: su.Bench, name: str, body: bytes) -> float:
    t = time.perf_counter()
    b.req("POST", f"{b.gateway}/function/{name}", body=body,
          headers={"Content-Type": su.codec.CONTENT_TYPE})
    return (time.perf_counter() - t) * 1e3


def rounds(b: su.Bench, name: str, base: dict[str, Any], body: bytes,
           a: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Interleaved trials: pool, fork (pool emptied), and a cold start every few rounds."""
    out: dict[str, list[dict[str, Any]]] = {"pool": [], "fork": [], "cold": [], "warm": []}
    for rnd in range(a.warmup_rounds + a.trials):
        keep = rnd >= a.warmup_rounds
        warm = b.call(base["url"], body)
        b.launcher.set_pool(name, 1)
        r_pool = quick_trial(b, name, base, body, pooled=True)
        b.launcher.set_pool(name, 0)
        r_fork = quick_trial(b, name, base, body, pooled=False)
        b.launcher.set_pool(name, 1)
        if keep:
            out["warm"].append({"ms": warm})
            out["pool"].append(r_pool)
            out["fork"].append(r_fork)
        if keep and (rnd - a.warmup_rounds) % a.cold_every == 0:
            b.launcher.mode, b.launcher.weights = su.TIERS["cold"]
            try:
                out["cold"].append(su.trial(b, name, base, body))
            finally:
                b.launcher.mode, b.launcher.weights = su.TIERS["T0"]
        print(f"  round {rnd + 1}: pool ready {r_pool['ready_ms']:.1f} ms, fork ready "
              f"{r_fork['ready_ms']:.1f} ms", file=sys.stderr, flush=True)
    return out


def run(b: su.Bench, key: str, a: argparse.Namespace) -> dict[str, Any]:
    mdir, man = su.ensure_partition(key)
    stage = man["num_stages"] - 1
    name = f"pool-{key}-{stage}"
    body = su.stage_body(man, stage)
    b.launcher.mode, b.launcher.weights = su.TIERS["T0"]
    b.req("POST", f"{b.gateway}/system/functions", su.deployment(name, mdir, stage))
    res: dict[str, Any] = {"model": man["model"], "stage": stage, "stages": stage + 1,
                           "parameter_bytes": man["stages"][stage]["parameter_bytes"],
                           "load_1m": [os.getloadavg()[0]]}
    try:
        b.wait(name, 1)
        base = b.replicas(name)[0]
        for _ in range(5):
            b.call(base["url"], body)
        res["trials"] = rounds(b, name, base, body, a)
        res["load_1m"].append(os.getloadavg()[0])
        wait_pool(b, name, 1)
        res["pool_status"] = b.status()["pool"]
        res["zero"] = [wake_trial(b, name, body) for _ in range(a.trials)]
        res["gateway_warm_ms"] = [z["warm_ms"] for z in res["zero"]]
        res["load_1m"].append(os.getloadavg()[0])
    finally:
        with contextlib.suppress(Exception):
            b.req("DELETE", f"{b.gateway}/system/functions", {"functionName": name})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="measured rounds")
    ap.add_argument("--warmup-rounds", type=int, default=1)
    ap.add_argument("--cold-every", type=int, default=5, help="a cold start every N rounds")
    ap.add_argument("--model", default="minilm", choices=sorted(su.MODELS))
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    if a.trials < 1 or a.cold_every < 1:
        ap.error("--trials and --cold-every must be >= 1")
    torch.set_num_threads(1)
    state = Path(tempfile.mkdtemp(prefix="quart-pool-")).absolute()
    su._log_to(state / "logs")
    server, stop, launcher, pw = su._provider(state)
    b: su.Bench | None = None
    ok = False
    try:
        urls = su._start(server, state)
        b = su.Bench(urls["gateway_url"], urls["provider_url"],
                     BasicAuth("admin", pw.read_text().strip()), launcher)
        res = run(b, a.model, a)
        judge(res)
        report(res)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
        ok = True
        return 0
    finally:
        if b is not None:
            with contextlib.suppress(Exception):
                b.status()
        stop.set()
        server.join(timeout=60)
        launcher.close()
        su.cleanup(b)
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"logs kept in {state / 'logs'}", file=sys.stderr)



if __name__ == "__main__":
    raise SystemExit(main())
