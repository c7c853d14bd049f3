"""Scale-up inside a pod: workers forked by the pod's zygote vs a new pod started cold.

Why: on Kubernetes a replica the gateway counts is a pod, and a new pod starts cold
(a fresh watchdog and index.py: import torch, load the stage). Pod mode makes the fast
path a worker inside a running pod, forked in milliseconds and sharing the stage's
weights copy-on-write; the CPU a pod's workers share changes in place (Pod ``resize``).
This measures both against the cold pod, in one run, with the real of-watchdog.

Pods are local_provider/pods.py's: the upstream fwatchdog in front of ``python index.py``
in pod mode, each in its own network namespace and CPU cgroup, reached at its IP:8080.
Every request goes through the watchdog, as the gateway's would; control calls go to the
zygote's control port (IP:8082), as the plugin's do.

Per model (the last stage of the partition: MiniLM 3-stage, BERT-large 4-stage = 6 layers):
  worker trial  one pod at 1 worker; ``PUT /_/quart/workers {"workers": 4}`` at t0; its
                answer (3 workers forked and accepting) = time to ready; then requests one
                at a time until a new worker answers one (``X-Quart-Worker``; the kernel may
                hand the first to the old worker): first response = time to ready + that
                call, i.e. a request routed to the new worker once it is ready; back to 1
  cold trial    a new pod (netns, cgroup, watchdog, index.py at 1 worker) at t0;
                ``/_/ready`` through the watchdog polled every 5 ms = ready; one request =
                first response; the pod is then stopped
  warm          the same request to the running pod's worker, one per round
  memory        PSS of zygote + workers at 1 and at 4 workers (each having answered a
                request): (sum at 4 - sum at 1) / 3 per extra worker (benchmark/procmem.py)
  cpu           the pod's quota set in place (none, 1000m, 500m, 250m): the time until the
                pod itself reads the new limit (its ``quart_pod_cpu_limit_cores``), then
                back-to-back requests' latency and the cgroup's throttled periods

Targets (issue 14): worker ready p50 <= 50 ms and >= 50x faster than a new pod; first
response <= warm inference + 50 ms; PSS per extra worker <= 5 % of the stage's parameter
bytes (BERT-large). Caveats: the partition is in the page cache, so the cold pod is a
warm-disk cold start without image pull or scheduling (a lower bound of a real one).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import urllib3

from benchmark import procmem
from benchmark.report.progress import Bars
from benchmark.studies.scaleup import MODELS, ensure_partition, stage_body
from functions.stage.codec import CONTENT_TYPE
from local_provider.pods import Pod, PodRunner, PodSpec, shrinkwrap

REPO = Path(__file__).resolve().parents[1]
HTTP = urllib3.PoolManager(num_pools=16, maxsize=8, retries=False)
QUOTAS = (None, 1000, 500, 250)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


class Bench:
    def __init__(self, runner: PodRunner, app: Path, env: dict[str, str], body: bytes) -> None:
        self.runner, self.app, self.env, self.body = runner, app, env, body
        self.token = secrets.token_urlsafe(24)
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.n = 0

    def start(self, name: str) -> Pod:
        self.n += 1
        return self.runner.start(PodSpec(f"{name}-{self.n}", self.app, self.env,
                                         {"quart-control-token": self.token.encode()}))

    def call(self, pod: Pod) -> tuple[float, str]:
        """One stage request through the watchdog: (ms, the worker that answered)."""
        t = time.perf_counter()
        r = HTTP.request("POST", pod.url + "/", body=self.body, timeout=120,
                         headers={"Content-Type": CONTENT_TYPE})
        if r.status != 200:
            raise RuntimeError(f"{pod.name}: {r.status} {r.data[:300]!r}")
        return (time.perf_counter() - t) * 1e3, r.headers.get("X-Quart-Worker", "")

    def control(self, pod: Pod, n: int | None = None) -> dict[str, Any]:
        body = None if n is None else json.dumps({"workers": n}).encode()
        r = HTTP.request("GET" if n is None else "PUT", pod.control_url + "/_/quart/workers",
                         body=body, headers=self.auth, timeout=120)
        if r.status != 200:
            raise RuntimeError(f"{pod.name}: control {r.status} {r.data[:300]!r}")
        return json.loads(r.data)

    def workers(self, pod: Pod) -> set[str]:
        zygote = self.control(pod)["pid"]
        return {str(p) for p in pod.pids() if p not in (pod.pid, zygote)}

    def settle(self, pod: Pod, n: int) -> None:
        """``n`` workers, and the retired ones gone (not only out of the pool)."""
        self.control(pod, n)
        deadline = time.monotonic() + 60
        while len(self.workers(pod)) != n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pod.name}: not {n} worker processes")
            time.sleep(0.01)


def metric(pod: Pod, name: str) -> float:
    text = HTTP.request("GET", pod.control_url + "/_/quart/metrics", timeout=10).data.decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"{pod.name}: no {name} in its metrics")
    return float(m[1])


def worker_trial(b: Bench, pod: Pod) -> dict[str, float]:
    old = b.workers(pod)
    spawn0 = (metric(pod, "quart_pod_worker_spawn_seconds_sum"),
              metric(pod, "quart_pod_worker_spawn_seconds_count"))
    t0 = time.perf_counter()
    state = b.control(pod, 4)
    t_ready = time.perf_counter()
    if state["ready"] != 4:
        raise RuntimeError(f"{pod.name}: PUT answered {state}")
    calls = 0
    while True:  # alone, so that no other inference shares the CPUs and the memory bus
        calls += 1
        ms, who = b.call(pod)
        if who not in old:
            break
    dsum = metric(pod, "quart_pod_worker_spawn_seconds_sum") - spawn0[0]
    dcount = metric(pod, "quart_pod_worker_spawn_seconds_count") - spawn0[1]
    b.settle(pod, 1)
    return {"ready_ms": (t_ready - t0) * 1e3, "first_ms": (t_ready - t0) * 1e3 + ms,
            "first_call_ms": ms, "calls": calls,
            "spawn_ms": dsum / dcount * 1e3 if dcount else float("nan")}


def cold_trial(b: Bench, name: str) -> dict[str, float]:
    t0 = time.perf_counter()
    pod = b.start(name)
    try:
        while True:
            if not pod.alive():
                raise RuntimeError(f"cold pod exited; see {pod.log}")
            try:
                if HTTP.request("GET", pod.url + "/_/ready", timeout=1).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.005)
        t_ready = time.perf_counter()
        ms, _ = b.call(pod)
        return {"ready_ms": (t_ready - t0) * 1e3, "first_ms": (time.perf_counter() - t0) * 1e3,
                "first_call_ms": ms}
    finally:
        pod.stop(2)


def memory(b: Bench, pod: Pod) -> dict[str, Any]:
    """PSS of zygote + workers, at 1 worker and at 4, each worker having answered."""
    b.settle(pod, 1)
    zygote = int(b.control(pod)["pid"])
    b.call(pod)
    time.sleep(0.5)
    one = procmem.group([zygote, *map(int, b.workers(pod))])
    b.settle(pod, 4)
    answered: set[str] = set()
    with ThreadPoolExecutor(4) as ex:
        for _ in range(50):
            answered |= {w for _, w in ex.map(lambda _: b.call(pod), range(4))}
            if len(answered) >= 4:
                break
    time.sleep(0.5)
    four = procmem.group([zygote, *map(int, b.workers(pod))])
    b.settle(pod, 1)
    return {"one": one, "four": four, "answered": len(answered),
            "pss_per_extra_bytes": (four["total"]["Pss"] - one["total"]["Pss"]) / 3}


def cpu_change(b: Bench, pod: Pod, n: int) -> list[dict[str, Any]]:
    """The pod's quota set in place; when the pod reads it; what it does to latency."""
    out = []
    stat = pod.cgroup / "cpu.stat"
    pids = set(pod.pids())
    for millis in QUOTAS:
        t0 = time.perf_counter()
        pod.resize_cpu(millis)
        want = -1.0 if millis is None else millis / 1000
        while metric(pod, "quart_pod_cpu_limit_cores") != want:
            if time.perf_counter() - t0 > 10:
                raise RuntimeError(f"{pod.name}: the pod never read {want} cores")
        seen_ms = (time.perf_counter() - t0) * 1e3
        throttled0 = _throttled(stat)
        lat = [b.call(pod)[0] for _ in range(n)]
        out.append({"millis": millis, "seen_by_pod_ms": seen_ms, "p50_ms": pct(lat, 50),
                    "p95_ms": pct(lat, 95), "throttled": _throttled(stat) - throttled0})
    pod.resize_cpu(None)
    for r in out:
        r["restarted"] = set(pod.pids()) != pids  # in place: the same processes throughout
    return out


def _throttled(stat: Path) -> int:
    for line in stat.read_text().splitlines():
        if line.startswith("nr_throttled "):
            return int(line.split()[1])
    return 0


def run_model(runner: PodRunner, key: str, a: argparse.Namespace) -> dict[str, Any]:
    mdir, man = ensure_partition(key)
    stage = man["num_stages"] - 1
    info = man["stages"][stage]
    app = shrinkwrap(REPO / "template" / "quart-python", REPO / "functions" / "stage",
                     runner.state_dir / "apps" / key)
    env = {**os.environ, "QUART_MODEL_DIR": str(mdir), "QUART_STAGE": str(stage),
           "QUART_TORCH_THREADS": "1", "QUART_POD_WORKERS": "1", "QUART_POD_MAX_WORKERS": "4"}
    b = Bench(runner, app, env, stage_body(man, stage))
    res: dict[str, Any] = {"model": man["model"], "stage": stage, "stages": stage + 1,
                           "layers": info["layers"], "parameters": info["parameters"],
                           "parameter_bytes": info["parameter_bytes"],
                           "loadavg_1m": [os.getloadavg()[0]]}
    pod = b.start(f"{key}-pod")
    try:
        pod.wait_ready(600)
        for _ in range(5):
            b.call(pod)
        rounds = a.warmup_rounds + a.trials
        cold_every = max(1, a.trials // max(1, a.cold_trials))
        warm: list[float] = []
        workers: list[dict[str, float]] = []
        cold: list[dict[str, float]] = []
        bars = Bars(sys.stderr)
        bar = bars.add(key, total=rounds + a.cold_trials, unit="trial")
        for rnd in range(rounds):
            counted = rnd >= a.warmup_rounds
            ms, _ = b.call(pod)
            r = worker_trial(b, pod)
            if counted:
                warm.append(ms)
                workers.append(r)
            bars.update(bar, advance=1)
            if counted and len(cold) < a.cold_trials and \
                    (rnd - a.warmup_rounds) % cold_every == cold_every - 1:
                cold.append(cold_trial(b, f"{key}-cold"))
                bars.update(bar, note=f"cold ready {cold[-1]['ready_ms']:.0f} ms")
                bars.update(bar, advance=1)
        while len(cold) < a.cold_trials:
            cold.append(cold_trial(b, f"{key}-cold"))
            bars.update(bar, advance=1)
        bars.close()
        res["warm_ms"] = warm + [b.call(pod)[0] for _ in range(max(0, 20 - len(warm)))]
        res["workers"] = {k: [r[k] for r in workers] for k in workers[0]}
        res["cold"] = {k: [r[k] for r in cold] for k in cold[0]}
        res["memory"] = memory(b, pod)
        res["cpu"] = cpu_change(b, pod, a.cpu_requests)
    finally:
        pod.stop(5)
    res["loadavg_1m"].append(os.getloadavg()[0])
    return res


def judge(res: dict[str, Any]) -> None:
    w, c = res["workers"], res["cold"]
    warm = pct(res["warm_ms"], 50)
    for d in (w, c):
        for k in ("ready_ms", "first_ms", "first_call_ms"):
            d[k.removesuffix("_ms") + "_p50"] = pct(d[k], 50)
            d[k.removesuffix("_ms") + "_p95"] = pct(d[k], 95)
    ratio = c["ready_p50"] / w["ready_p50"]
    pss_pct = 100 * res["memory"]["pss_per_extra_bytes"] / res["parameter_bytes"]
    res.update(warm_p50_ms=warm, ratio_ready=ratio, pss_per_extra_pct=pss_pct,
               ratio_first=c["first_p50"] / w["first_p50"])
    cpu = {r["millis"]: r for r in res["cpu"]}
    slow = cpu[250]["p50_ms"] / cpu[None]["p50_ms"]
    big = res["parameter_bytes"] > 100 << 20  # the PSS goal is BERT-large's
    seen = max(r["seen_by_pod_ms"] for r in res["cpu"])
    res["targets"] = [
        ("worker ready p50 (1 -> 4 workers)", f"{w['ready_p50']:.1f} ms", "<= 50 ms",
         w["ready_p50"] <= 50),
        ("worker ready p95", f"{w['ready_p95']:.1f} ms", "(no goal)", None),
        ("new pod ready p50 (cold)", f"{c['ready_p50']:.0f} ms", "(baseline)", None),
        ("new pod / worker, time to ready", f"{ratio:.0f}x", ">= 50x", ratio >= 50),
        ("worker first response p50", f"{w['first_p50']:.1f} ms",
         f"<= warm + 50 = {warm + 50:.1f} ms", w["first_p50"] <= warm + 50),
        ("PSS per extra worker", f"{pss_pct:.2f} % of params",
         "<= 5 %" if big else "(goal is BERT-large's)", pss_pct <= 5 if big else None),
        ("CPU limit in place: pod reads it in", f"{seen:.1f} ms", "applied, no restart",
         not any(r["restarted"] for r in res["cpu"])),
        ("  latency at 250m / unlimited (p50)", f"{slow:.2f}x", "(the quota bites)", None)]


def report(res: dict[str, Any], a: argparse.Namespace) -> None:
    mib = 1 / 2**20
    w, c, mem = res["workers"], res["cold"], res["memory"]
    print(f"\n{res['model']}, stage {res['stage']} of {res['stages']} (layers "
          f"{res['layers'][0]}..{res['layers'][1] - 1}, {res['parameters'] / 1e6:.1f}M "
          f"parameters, {res['parameter_bytes'] * mib:.0f} MiB); batch 1 x 32 tokens; "
          f"{len(w['ready_ms'])} worker trials, {len(c['ready_ms'])} cold pods; node load "
          f"{res['loadavg_1m'][0]:.1f} -> {res['loadavg_1m'][1]:.1f} on {os.cpu_count()} CPUs")
    print(f"\n{'':<26} {'ready p50':>10} {'ready p95':>10} {'first p50':>10} {'first p95':>10}"
          f" {'1st call p50':>13}  (ms)")
    for label, d in (("workers 1 -> 4 (fork)", w), ("new pod (cold)", c)):
        print(f"{label:<26} {d['ready_p50']:10.1f} {d['ready_p95']:10.1f} {d['first_p50']:10.1f}"
              f" {d['first_p95']:10.1f} {d['first_call_p50']:13.1f}")
    print(f"warm inference p50 {res['warm_p50_ms']:.1f} ms; fork -> accepting per worker "
          f"(zygote's histogram) mean {np.nanmean(w['spawn_ms']):.1f} ms; new pod / worker: "
          f"ready {res['ratio_ready']:.0f}x, first response {res['ratio_first']:.0f}x")
    print(f"PSS zygote + workers: {mem['one']['total']['Pss'] * mib:.0f} MiB at 1, "
          f"{mem['four']['total']['Pss'] * mib:.0f} MiB at 4 ({mem['answered']}/4 answered): "
          f"{mem['pss_per_extra_bytes'] * mib:.1f} MiB per extra worker")
    print(f"\nCPU in place ({a.cpu_requests} back-to-back requests per quota, 1 worker):")
    print(f"  {'limit':>7} {'pod reads it':>13} {'p50 ms':>8} {'p95 ms':>8} {'x p50':>6} "
          f"{'throttled':>9}")
    base = res["cpu"][0]["p50_ms"]
    for r in res["cpu"]:
        lim = "none" if r["millis"] is None else f"{r['millis']}m"
        print(f"  {lim:>7} {r['seen_by_pod_ms']:10.1f} ms {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
              f"{r['p50_ms'] / base:6.2f} {r['throttled']:9d}")
    print(f"\n  {'figure':<36} {'measured':>20}   {'goal':<26} ")
    for what, value, goal, ok in res["targets"]:
        verdict = "" if ok is None else "met" if ok else "MISSED"
        print(f"  {what:<36} {value:>20}   {goal:<26} {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="worker trials per model")
    ap.add_argument("--cold-trials", type=int, default=3, help="new pods per model")
    ap.add_argument("--warmup-rounds", type=int, default=2, help="worker trials not counted")
    ap.add_argument("--cpu-requests", type=int, default=30, help="requests per CPU quota")
    ap.add_argument("--models", default="minilm,bert-large", help=f"of {', '.join(MODELS)}")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--state-dir", help="pods' logs (default: a temp dir, removed on success)")
    a = ap.parse_args(argv)
    models = [k.strip() for k in a.models.split(",") if k.strip()]
    if any(k not in MODELS for k in models) or not models or a.trials < 1 or a.cold_trials < 1:
        ap.error(f"models must be of {sorted(MODELS)}; --trials and --cold-trials >= 1")
    state = Path(a.state_dir or tempfile.mkdtemp(prefix="quart-pod-scaleup-")).absolute()
    runner = PodRunner(state)
    out: dict[str, Any] = {"args": vars(a), "cpus": os.cpu_count(), "models": {}}
    ok = False
    try:
        for key in models:
            res = run_model(runner, key, a)
            judge(res)
            report(res, a)
            out["models"][key] = res
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
            print(f"\nwrote {a.json}")
        ok = True
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        runner.close()
        if ok and not a.state_dir:
            shutil.rmtree(state, ignore_errors=True)
        elif not ok:
            print(f"pod logs kept in {state / 'pods'}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
