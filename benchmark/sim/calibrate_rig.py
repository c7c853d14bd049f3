"""Measure the rig's host-side costs on this machine: ``python -m benchmark.sim.calibrate --rig``.

The device times need no measuring here: the simulator reads them from the partition's
manifest, as the stage does (``rig.service_means``).  What the manifest cannot know is
what the *host* spends moving a request, and how long a new replica takes:

- **Sequential requests** (one at a time: no queueing, no contention between stages) to
  the live ``emu`` pipeline (``rigpipe``), the body ``benchmark.live`` sends.  Each
  answer's ``Server-Timing`` carries every stage's device time; the CPU of every process
  is read from ``/proc`` (utime + stime) over the run, less what it burns idle (measured
  for ``--idle-s`` first): the gateway's per request (split
  evenly over the hops: ``hop_cpu_s``), each stage's replica per request (parsing, the
  activation codec, HTTP: ``replica_cpu_s``), and the client's own thread CPU
  (``client_cpu_s``).  End-to-end minus device times minus all that CPU is delay per
  hop (``hop_s``: loopback, waits).
- **Spawn times**: scale ``emu-stage-3`` from 1 to 2 replicas through the gateway and
  poll ``/system/function`` until the gateway counts 2 available; then back to 1.  Once
  with keys_manager forking from the zygote (``fork``: Quart), once with a fresh process
  per replica on a second deployment (``QUART_LAUNCHER=process``: a cold start, what the
  baselines' platforms pay).

The pipeline's processes and this client run at nice -20 (``--nice``), so the other
programs on a shared machine take little of the cores; their runnable threads are
sampled (``background``) and recorded.  Writes ``rig_calibration.json`` beside this
module (``--out`` elsewhere), which ``rig.RigHost.load`` reads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmark.report.progress import track
from local_provider import deploy

from . import livepipe, rigpipe
from .background import RunnableSampler
from .calibration import RIG_CALIBRATION
from .livepipe import LivePipeline
from .rig import request_shape, service_means

SPAWN_STAGE = "emu-stage-3"


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"mean_s": float(a.mean()), "cv": float(a.std() / a.mean()) if a.mean() else 0.0,
            "p50_s": float(np.percentile(a, 50)), "p95_s": float(np.percentile(a, 95)),
            "n": len(xs)}


def ours(live: LivePipeline) -> list[int]:
    """The deployment's processes: gateway (and provider), keys_manager, every replica."""
    from local_provider import services

    return [svc.pid for svc in services.recorded(live.state)] + live.replica_pids()


def idle_rates(groups: list[list[int]], seconds: float) -> list[float]:
    """CPU seconds per second each group burns with no request in flight (the gateway's
    reconcile loop and health checks, timers): a cost of the clock, not of requests."""
    if seconds <= 0:
        return [0.0] * len(groups)
    cpu0 = [livepipe.cpu_seconds(g) for g in groups]
    time.sleep(seconds)
    return [(livepipe.cpu_seconds(g) - c) / seconds for g, c in zip(groups, cpu0, strict=True)]


def sequential(live: LivePipeline, n: int, warmup: int, inputs: int,
               idle_s: float = 10.0) -> dict[str, Any]:
    """Per request, the CPU each process group spends *because of* it: its CPU over the
    run minus its idle rate times the run's length.  Without the subtraction a slow,
    sequential calibration charges every request ~3 ms of the gateway's idle clock work,
    and the simulator, running at 30 rps what was measured at 2, saturates the cores the
    live rig does not (the CV 8 bursts drained slower simulated than live)."""
    payload = rigpipe.body(inputs)
    s = requests.Session()
    hdr = {"Content-Type": "application/json"}
    for _ in range(warmup):
        s.post(live.url, data=payload, headers=hdr, timeout=60).raise_for_status()
    groups = [live.gateway_pids()] + [live.replica_pids(f) for f in live.functions]
    idle = idle_rates(groups, idle_s)
    sampler = RunnableSampler(lambda: ours(live)).start()
    cpu0 = [livepipe.cpu_seconds(g) for g in groups]
    w0 = time.monotonic()
    client = 0.0
    e2e: list[float] = []
    per_stage: list[list[float]] = [[] for _ in live.functions]
    for _ in track(range(n), "sequential requests", transient=True):
        c0, t0 = time.thread_time(), time.perf_counter()
        r = s.post(live.url, data=payload, headers=hdr, timeout=60)
        e2e.append(time.perf_counter() - t0)
        client += time.thread_time() - c0
        r.raise_for_status()
        times = livepipe.stage_times(r.headers.get("Server-Timing"))
        if len(times) != len(live.functions):
            raise SystemExit(f"Server-Timing has {len(times)} entries: "
                             f"{r.headers.get('Server-Timing')!r}")
        for k, x in enumerate(times):
            per_stage[k].append(x)
    wall = time.monotonic() - w0
    burnt = [max(0.0, livepipe.cpu_seconds(g) - c - rate * wall) / n
             for g, c, rate in zip(groups, cpu0, idle, strict=True)]
    bg = sampler.stop()
    return {"e2e": _stats(e2e), "device": [_stats(x) for x in per_stage],
            "gateway_cpu_s": burnt[0], "replica_cpu_s": burnt[1:], "client_cpu_s": client / n,
            "idle_cpu_per_s": {"gateway": idle[0], "replicas": idle[1:], "window_s": idle_s},
            "background": vars(bg)}


def handoff(live: LivePipeline, k: int, clients: int, seconds: float, inputs: int,
            nice: int) -> dict[str, Any]:
    """Stage ``k`` the only bottleneck (1 replica, the others 3), ``clients`` closed-loop
    clients keep a backlog at it: it completes one request per device time plus the
    hand-over to the next waiter, so 1 / throughput - its device time is that hand-over."""
    want = {f: 1 if i == k else 3 for i, f in enumerate(live.functions)}
    for f, n in want.items():
        _scale(live, f, n)
    deploy.wait_available(live.gateway, live.auth, want)
    if nice:  # the replicas just started too
        live.prioritise(nice)
    payload = rigpipe.body(inputs)
    hdr = {"Content-Type": "application/json"}
    device: list[list[float]] = []  # every stage's device time, per request
    lock = threading.Lock()

    def client(stop: float) -> int:
        s, n = requests.Session(), 0
        while time.monotonic() < stop:
            r = s.post(live.url, data=payload, headers=hdr, timeout=60)
            r.raise_for_status()
            with lock:
                device.append(livepipe.stage_times(r.headers.get("Server-Timing")))
            n += 1
        return n

    with ThreadPoolExecutor(clients) as ex:  # warm every replica, then measure
        list(ex.map(client, [time.monotonic() + 3.0] * clients))
        device.clear()
        t0 = time.monotonic()
        n = sum(ex.map(client, [t0 + seconds] * clients))
        dt = time.monotonic() - t0
    dev = float(np.mean([x[k] for x in device]))
    return {"stage": k, "throughput_per_s": n / dt, "device_s": dev,
            "handoff_s": max(0.0, dt / n - dev), "requests": n,
            "device_samples_s": [list(x) for x in zip(*device, strict=True)]}


def late_wakes(sat: list[dict[str, Any]], mean_s: list[float], cv: list[float]
               ) -> list[dict[str, Any]]:
    """Per stage, device holds under load that no gamma draw explains: beyond the mean by
    more than 3.5 standard deviations of the draw (a gamma at CV 0.04 gets there about
    once in 4,000), pooled over the saturation runs (the stage saturated in one, loaded
    in the others).  Their share and how much longer than the mean they were: the
    thread that slept on the device woke late (the host was busy)."""
    out = []
    for k, (m, c) in enumerate(zip(mean_s, cv, strict=True)):
        xs = np.concatenate([np.asarray(run["device_samples_s"][k]) for run in sat])
        late = xs[xs > m * (1 + 3.5 * c)] - m
        out.append({"p": float(len(late) / len(xs)), "extra_s": sorted(late.tolist()),
                    "samples": len(xs)})
    return out


def _available(live: LivePipeline, fn: str) -> int:
    r = requests.get(f"{live.gateway}/system/function/{fn}", auth=live.auth, timeout=5)
    r.raise_for_status()
    return int(r.json().get("availableReplicas", 0))


def _scale(live: LivePipeline, fn: str, n: int) -> None:
    requests.post(f"{live.gateway}/system/scale-function/{fn}", auth=live.auth, timeout=10,
                  json={"serviceName": fn, "replicas": n}).raise_for_status()


def spawn_times(live: LivePipeline, trials: int, poll_s: float = 0.005,
                timeout_s: float = 60.0) -> tuple[list[float], list[float]]:
    """Seconds from the scale call to the gateway counting the new replica available, and
    the CPU seconds the new replica's process had used by then (a cold start imports
    torch: that CPU competes with everything else on the node)."""
    out, cpu = [], []
    for _ in track(range(trials), "spawn trials", transient=True):
        before = set(live.replica_pids(SPAWN_STAGE))
        t0 = time.perf_counter()
        _scale(live, SPAWN_STAGE, 2)
        while _available(live, SPAWN_STAGE) < 2:
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit(f"{SPAWN_STAGE}: no second replica after {timeout_s:g} s")
            time.sleep(poll_s)
        out.append(time.perf_counter() - t0)
        cpu.append(livepipe.cpu_seconds(sorted(set(live.replica_pids(SPAWN_STAGE)) - before)))
        _scale(live, SPAWN_STAGE, 1)
        deadline = time.monotonic() + 30
        while len(live.replica_pids(SPAWN_STAGE)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    return out, cpu


def bulk_spawn(live: LivePipeline, starts: int, trials: int, poll_s: float = 0.05,
               timeout_s: float = 180.0) -> dict[str, Any]:
    """``starts`` cold starts at once (one scale call from 1 to 1 + ``starts``), as an
    autoscaler asks for them in a burst: each new replica's CPU once all are available,
    and the seconds until the last was.  A check of the simulator's cold-start model,
    which charges every start the CPU of one alone on the node's shared cores
    (``lifecycle.place``): if importing processes slowed each other beyond sharing the
    cores, the makespan would exceed ``predicted_makespan``."""
    cpu: list[float] = []
    span: list[float] = []
    for _ in track(range(trials), f"{starts} cold starts at once", transient=True):
        before = set(live.replica_pids(SPAWN_STAGE))
        t0 = time.perf_counter()
        _scale(live, SPAWN_STAGE, 1 + starts)
        while _available(live, SPAWN_STAGE) < 1 + starts:
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit(f"{SPAWN_STAGE}: {starts} starts not ready after {timeout_s:g} s")
            time.sleep(poll_s)
        span.append(time.perf_counter() - t0)
        cpu += [livepipe.cpu_seconds([p]) for p in
                sorted(set(live.replica_pids(SPAWN_STAGE)) - before)]
        _scale(live, SPAWN_STAGE, 1)
        deadline = time.monotonic() + 60
        while len(live.replica_pids(SPAWN_STAGE)) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    return {"starts": starts, "trials": trials, "cores": os.cpu_count(), "cpu_s": cpu,
            "cpu_s_mean": float(np.mean(cpu)), "makespan_s": span}


def measure_bulk(a: argparse.Namespace) -> dict[str, Any]:
    """Only the bulk cold starts (``--bulk-only``): added to an existing calibration, with
    the command and time of this measurement."""
    with rigpipe.deployed(a.time_scale, a.devices, "process") as live:
        if a.nice:
            live.prioritise(a.nice)
        bulk = bulk_spawn(live, a.bulk_spawn, a.bulk_trials)
    return {**bulk, "command": "python -m benchmark.sim.calibrate --rig " + " ".join(a.argv),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}


def measure(a: argparse.Namespace) -> dict[str, Any]:
    load0 = os.getloadavg()
    with rigpipe.deployed(a.time_scale, a.devices, "fork") as live:
        if a.nice:
            print(f"{live.prioritise(a.nice)} threads at nice {a.nice}")
        seq = sequential(live, a.requests, a.warmup, a.inputs, a.idle_s)
        fork, fork_cpu = spawn_times(live, a.spawn_trials)
        sat = [handoff(live, k, a.clients, a.saturate_s, a.inputs, a.nice)
               for k in range(len(live.functions))]
        model_dir = live.model_dir
    with rigpipe.deployed(a.time_scale, a.devices, "process") as live:
        if a.nice:
            live.prioritise(a.nice)
        cold, cold_cpu = spawn_times(live, a.spawn_trials)
        bulk = bulk_spawn(live, a.bulk_spawn, a.bulk_trials) if a.bulk_spawn > 1 else None
    texts = tuple(rigpipe.texts(a.inputs))
    stages = len(seq["device"])
    cpu = seq["gateway_cpu_s"] + sum(seq["replica_cpu_s"]) + seq["client_cpu_s"]
    overhead = seq["e2e"]["mean_s"] - sum(d["mean_s"] for d in seq["device"])
    model = service_means(model_dir, texts, a.time_scale)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmark.sim.calibrate --rig " + " ".join(a.argv),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "loadavg_before": load0,
                    "loadavg_after": os.getloadavg(), "nice": a.nice},
        "time_scale": a.time_scale, "devices": a.devices, "inputs": a.inputs,
        "shape": request_shape(model_dir, texts), "requests": a.requests, **seq,
        "model_device_s": [m for m, _cv in model],
        # what a stage holds its device beyond the drawn time (the sleep's wake-up, the
        # last stage's pooling inside the lock): added to the simulated device time
        "device_extra_s": [d["mean_s"] - m for d, (m, _cv) in zip(seq["device"], model,
                                                                    strict=True)],
        "overhead_s": overhead,
        "saturation": [{k: v for k, v in x.items() if k != "device_samples_s"} for x in sat],
        "handoff_s": [x["handoff_s"] for x in sat],
        "late_wakes": late_wakes(sat, [d["mean_s"] for d in seq["device"]],
                                 [cv for _m, cv in model]),
        "hop_cpu_s": seq["gateway_cpu_s"] / stages,
        "hop_s": max(0.0, overhead - cpu) / stages,
        "spawn": {"fork": {**_stats(fork), "samples_s": fork, "cpu_s": fork_cpu,
                           "cpu_s_mean": float(np.mean(fork_cpu))},
                  "cold": {**_stats(cold), "samples_s": cold, "cpu_s": cold_cpu,
                           "cpu_s_mean": float(np.mean(cold_cpu)),
                           **({"bulk": bulk} if bulk else {})},
                  "first_call_s": 0.0,
                  "stage": SPAWN_STAGE, "trials": a.spawn_trials}}


def report(d: dict[str, Any]) -> None:
    print(f"\nemu pipeline, time scale {d['time_scale']:g}, {d['inputs']} sentences/request "
          f"(shape {d['shape'][0]} x {d['shape'][1]}), {d['requests']} sequential requests; "
          f"other programs' runnable threads meanwhile {d['background']['mean']:.2f}\n")
    print(f"{'stage':<6} {'device ms':>10} {'manifest ms':>12} {'ratio':>6} "
          f"{'replica CPU ms':>15} {'saturated /s':>13} {'hand-over ms':>13}")
    for k, (dev, m, c, sat) in enumerate(zip(d["device"], d["model_device_s"],
                                             d["replica_cpu_s"], d["saturation"],
                                             strict=True)):
        print(f"{k:<6} {dev['mean_s'] * 1e3:10.2f} {m * 1e3:12.2f} {dev['mean_s'] / m:6.3f} "
              f"{c * 1e3:15.2f} {sat['throughput_per_s']:13.2f} {sat['handoff_s'] * 1e3:13.2f}")
    print("late wakes under load (share; extra ms p50/max): " + ", ".join(
        f"{w['p'] * 100:.1f} %; {np.median(w['extra_s'] or [0]) * 1e3:.0f}/"
        f"{max(w['extra_s'] or [0]) * 1e3:.0f}" for w in d["late_wakes"]))
    print(f"\ne2e mean {d['e2e']['mean_s'] * 1e3:.1f} ms; overhead {d['overhead_s'] * 1e3:.1f} ms"
          f" = gateway CPU {d['gateway_cpu_s'] * 1e3:.2f} + replicas' CPU "
          f"{sum(d['replica_cpu_s']) * 1e3:.2f} + client CPU {d['client_cpu_s'] * 1e3:.2f} + "
          f"delay {d['hop_s'] * len(d['device']) * 1e3:.2f} ms")
    for tier in ("fork", "cold"):
        s = d["spawn"][tier]
        print(f"spawn {tier:<5} p50 {s['p50_s'] * 1e3:8.1f} ms  p95 {s['p95_s'] * 1e3:8.1f} ms  "
              f"CPU {s['cpu_s_mean'] * 1e3:7.1f} ms ({s['n']} trials)")
    report_bulk(d["spawn"]["cold"])


def predicted_makespan(cold: dict[str, Any], starts: int, cores: float) -> float:
    """When the simulator has ``starts`` cold starts launched at once on an idle node all
    ready: each burns the CPU of one alone, the cores processor-shared (one core at most
    each), then waits the rest of one alone's wall time."""
    cpu = min(cold["cpu_s_mean"], cold["p50_s"])
    return starts * cpu / min(float(starts), cores) + (cold["p50_s"] - cpu)


def report_bulk(cold: dict[str, Any]) -> None:
    b = cold.get("bulk")
    if b:
        cores = float(b.get("cores") or os.cpu_count() or 1)
        got, want = float(np.median(b["makespan_s"])), predicted_makespan(cold, b["starts"],
                                                                          cores)
        print(f"spawn cold x{b['starts']} at once: CPU {b['cpu_s_mean'] * 1e3:7.1f} ms each "
              f"(alone {cold['cpu_s_mean'] * 1e3:.1f}); all ready in {got:.2f} s (median of "
              f"{b['trials']}), the model's charge predicts {want:.2f} s ({got / want:.2f}x)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.sim.calibrate --rig",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--inputs", type=int, default=4, help="sentences per request")
    ap.add_argument("--time-scale", type=float, default=rigpipe.TIME_SCALE)
    ap.add_argument("--devices", type=int, default=rigpipe.DEVICES)
    ap.add_argument("--idle-s", type=float, default=10.0,
                    help="seconds of no load first: each process group's idle CPU rate, "
                         "taken off its per-request CPU")
    ap.add_argument("--spawn-trials", type=int, default=10)
    ap.add_argument("--bulk-spawn", type=int, default=16,
                    help="cold starts launched at once for the bulk trial (0: none)")
    ap.add_argument("--bulk-trials", type=int, default=2)
    ap.add_argument("--bulk-only", action="store_true",
                    help="measure only the bulk cold starts, into the existing --out")
    ap.add_argument("--saturate-s", type=float, default=25.0,
                    help="seconds of saturation per stage (the hand-over measurement)")
    ap.add_argument("--clients", type=int, default=8,
                    help="closed-loop clients while saturating (<= max_inflight 8)")
    ap.add_argument("--nice", type=int, default=-20)
    ap.add_argument("--out", type=Path, default=RIG_CALIBRATION)
    a = ap.parse_args(argv)
    if a.requests < 10 or a.warmup < 0 or a.inputs < 1 or a.spawn_trials < 2 \
            or a.time_scale <= 0 or a.devices < 1 or a.idle_s < 0:
        ap.error("--requests >= 10, --warmup >= 0, --inputs >= 1, --spawn-trials >= 2, "
                 "--time-scale > 0, --devices >= 1, --idle-s >= 0")
    if a.bulk_spawn < 0 or a.bulk_trials < 1 or (a.bulk_only and a.bulk_spawn < 2):
        ap.error("--bulk-spawn >= 0 (>= 2 with --bulk-only), --bulk-trials >= 1")
    a.argv = argv
    if a.bulk_only:
        try:
            d = json.loads(a.out.read_text())
            d["spawn"]["cold"]["bulk"] = measure_bulk(a)
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"--bulk-only adds to a calibration: {a.out}: {e}")
        report_bulk(d["spawn"]["cold"])
        a.out.write_text(json.dumps(d, indent=1) + "\n")
        print(f"\nwrote {a.out}")
        return 0
    d = measure(a)
    report(d)
    a.out.write_text(json.dumps(d, indent=1) + "\n")
    print(f"\nwrote {a.out}")
    return 0
