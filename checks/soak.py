"""``python -m checks.soak --minutes 30 [--faults]``: the whole system under bursty load.

A fresh deployment of stack.yml (its first pipeline, MiniLM) on free ports in
its own state directory: local gateway + provider, keys_manager and its
zygotes, Prometheus, Redis and the autoscaling plugin, all real processes.
Open-loop gamma arrivals (``--rps``, ``--cv``, ``--seed``) are sent to the
pipeline's first stage for the whole run while the plugin scales.

It prints, from the running system:

* RSS (and PSS) of every long-running process after the warm-up and when the
  load ends, with growth (goal: < 5 %); replicas in aggregate;
* failed requests (all, and those outside injected faults; goal: 0);
* replicas created and destroyed per stage (and how each was made);
* leaked ``/dev/shm`` segments and processes left after ``down`` (goal: none).

``--faults`` kills (SIGKILL) a replica, a zygote, keys_manager, the plugin,
Redis, Prometheus and the gateway, and hangs a replica (SIGSTOP, then SIGCONT),
at set times (``--fault-at SECONDS:KIND`` to choose) and reports per fault the
time to recover and the requests lost; see checks/soak_faults.py for who brings
each back and what "recovered" means.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from rich.console import Console

from benchmark import openloop
from benchmark.report.progress import Bars
from benchmark.workloads import gamma
from checks import soak_probe, soak_report
from checks.soak_faults import (
    Fault,
    Injector,
    Outcome,
    ScheduleError,
    default_schedule,
    parse_schedule,
    score,
)
from contracts.stack import load_stack
from local_provider import deploy, plugin_services, services
from quart_faas.demo import SENTENCES


@dataclass
class SoakConfig:
    minutes: float = 30.0
    rps: float = 4.0
    cv: float = 3.0
    seed: int = 0
    inputs: int = 4
    warmup_s: float | None = None  # default: 10 % of the run, within [30 s, 300 s]
    faults: list[Fault] | None = None  # None: no faults
    restart_delay_s: float = 2.0
    settle_s: float = 5.0
    period_s: float = 2.0
    mem_every_s: float = 10.0
    timeout_s: float = 60.0
    stack_file: str = "stack.yml"
    state_dir: Path = Path(".quart/soak")
    json_path: Path | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(300.0, max(30.0, 0.1 * self.duration_s), 0.5 * self.duration_s)


def _partition(stack_file: str, say: Any) -> None:
    stack = load_stack(stack_file)
    fn0 = stack.functions[next(iter(stack.functions))]
    model_dir = fn0.environment.get("QUART_MODEL_DIR", ".quart/models/minilm-3")
    if not (stack.root / model_dir / "manifest.json").exists():
        from functions.partitioner import partition

        say(f"partitioning {fn0.environment.get('QUART_MODEL')} -> {model_dir}")
        partition(stack.root / model_dir, int(fn0.environment.get("QUART_STAGES", "3")),
                  model=fn0.environment.get("QUART_MODEL", "all-MiniLM-L6-v2"))


def _deploy(cfg: SoakConfig, say: Any) -> soak_probe.Target:
    sdir = cfg.state_dir
    if sdir.exists():  # a previous soak's leftovers: stop what it recorded, start clean
        deploy.down(sdir, say=lambda m: None)
        shutil.rmtree(sdir)
    sdir.mkdir(parents=True)
    ports = [services.free_port() for _ in range(7)]
    stack, ep = deploy.up(cfg.stack_file, f"http://127.0.0.1:{ports[0]}", sdir,
                          f"http://127.0.0.1:{ports[1]}", say=say, provider_port=ports[2],
                          metrics_port=ports[3], keys_metrics_port=ports[4])
    auth = (deploy.USER, deploy.password_file(sdir).read_text().strip())
    redis_url = plugin_services.ensure_redis(sdir, f"redis://127.0.0.1:{ports[5]}/0", say)
    env = {"QUART_CONTROL_PERIOD_S": str(cfg.period_s)}
    plugin_services.start_plugin(sdir, ep.gateway, ep.prometheus, redis_url, ports[6], say, env)
    return soak_probe.Target(sdir, ep.gateway, ep.metrics, ep.prometheus, ep.keys_metrics,
                             redis_url, ports[6], env, auth, list(stack.functions))


class MemorySampler:
    """A memory snapshot at the end of the warm-up, then every ``every_s`` (the timeline)."""

    def __init__(self, t: soak_probe.Target, t0: float, warmup_s: float, every_s: float) -> None:
        self.t, self.t0, self.warmup_s, self.every_s = t, t0, warmup_s, every_s
        self.start: dict[str, Any] | None = None
        self.timeline: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-memory", daemon=True)

    def _run(self) -> None:
        if self._stop.wait(max(0.0, self.t0 + self.warmup_s - time.perf_counter())):
            return
        while True:
            snap = soak_probe.memory(self.t)
            if self.start is None:
                self.start = snap
            self.timeline.append({"t": round(time.perf_counter() - self.t0, 1),
                                  **{k: v["rss"] for k, v in snap.items()}})
            if self._stop.wait(self.every_s):
                return

    def begin(self) -> MemorySampler:
        self._thread.start()
        return self

    def end(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def run(cfg: SoakConfig, con: Console) -> dict[str, Any]:
    """Deploy, load (and faults), measure, tear down; returns the report (also printed)."""
    say = con.print
    _partition(cfg.stack_file, say)
    shm_before = soak_probe.shm_entries()
    cfg.extra["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    faults = list(cfg.faults or [])
    t: soak_probe.Target | None = None
    tracker = mem = inj = None
    results: list[openloop.Result] = []
    try:
        t0_deploy = time.perf_counter()
        t = _deploy(cfg, say)
        say(f"deployed in {time.perf_counter() - t0_deploy:.1f}s: {', '.join(t.names)} "
            f"(state {t.state_dir}, T1 {t.shm_dir})")
        url = f"{t.gateway}/function/{t.names[0]}"
        body = json.dumps({"inputs": SENTENCES[: cfg.inputs]}).encode()
        for _ in range(3):  # warm the pipeline once before the clock starts
            requests.post(url, data=body, timeout=cfg.timeout_s,
                          headers={"Content-Type": "application/json"}).raise_for_status()
        arrivals = gamma(cfg.rps, cfg.cv, cfg.duration_s, cfg.seed, target=t.names[0])
        offsets = np.asarray(arrivals.for_target(t.names[0]), dtype=float)
        say(f"load: {len(offsets)} requests open-loop over {cfg.duration_s:g}s, mean "
            f"{cfg.rps:g}/s, CV {cfg.cv:g}, seed {cfg.seed} (workload sha256 "
            f"{arrivals.sha256()[:12]}); warm-up {cfg.warmup:.0f}s; plugin period "
            f"{cfg.period_s:g}s")
        t0 = time.perf_counter() + 0.5  # the load's clock: every part below keys on it
        tracker = soak_probe.Tracker(t, t0).start()
        mem = MemorySampler(t, t0, cfg.warmup, cfg.mem_every_s).begin()
        if faults:
            inj = Injector(t, faults, t0, cfg.duration_s, cfg.seed, cfg.restart_delay_s,
                           say=say).start()  # above the bar: rich redirects stdout
        results = _drive(cfg, url, body, offsets, t0, tracker)
        end_s = time.perf_counter() - t0
        mem_end = soak_probe.memory(t)
        mem.end()
        if inj:
            inj.join()
        tracker.stop()
    except BaseException:
        if inj:
            inj.join(abort=True)
        for x in (tracker, mem):
            if x is not None:
                (x.stop if isinstance(x, soak_probe.Tracker) else x.end)()
        raise
    finally:
        if t is not None or cfg.state_dir.exists():
            deploy.down(cfg.state_dir, say=lambda m: None)
    return _finish(cfg, con, t, results, end_s, faults, tracker, mem, mem_end, shm_before)


def _drive(cfg: SoakConfig, url: str, body: bytes, offsets: np.ndarray, t0: float,
           tracker: soak_probe.Tracker) -> list[openloop.Result]:
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    bars = Bars(disable=not cfg.progress)
    bar = bars.add("soak", total=int(cfg.duration_s), unit="s")
    stop = threading.Event()

    def on_done(r: openloop.Result) -> None:
        with lock:
            counts["ok" if r.status == 200 else "failed"] += 1

    def tick() -> None:
        while not stop.wait(1.0):
            reps = "/".join(str(v.get("availableReplicas", 0)) for v in tracker.last.values())
            bars.update(bar, completed=min(int(cfg.duration_s), int(time.perf_counter() - t0)),
                        note=f"ok {counts['ok']} failed {counts['failed']} "
                             f"replicas {reps or '-'}")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        # send times, kills and health checks share one clock: t0.  (Letting openloop start
        # its own, 50 ms after a call timed to t0, was off by the sleep's overshoot: on a busy
        # machine a call failed by a kill then looked finished before it, outside the fault.)
        return openloop.run(url, body, offsets, timeout_s=cfg.timeout_s, on_done=on_done,
                            start_at=t0)
    finally:
        stop.set()
        ticker.join(timeout=5)
        bars.update(bar, completed=int(cfg.duration_s))
        bars.close()


def _finish(cfg: SoakConfig, con: Console, t: soak_probe.Target | None,
            results: list[openloop.Result], end_s: float, faults: list[Fault],
            tracker: soak_probe.Tracker, mem: MemorySampler, mem_end: dict[str, Any],
            shm_before: set[str]) -> dict[str, Any]:
    assert t is not None
    cfg.extra["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    cfg.extra["cpus"] = os.cpu_count()
    outcomes = [Outcome(r.planned_s, r.planned_s + r.latency_s, r.status == 200,
                        str(r.status) if r.status else (r.error or "error")) for r in results]
    outside = score(faults, outcomes, end_s, cfg.settle_s)
    shm_ours = soak_probe.shm_files(t.shm_dir)
    shm_new = sorted(soak_probe.shm_entries() - shm_before)
    left = tracker.leftovers()
    cleaned = _clean(t.shm_dir, left)
    rows = soak_report.growth(mem.start or {}, mem_end)
    ok_flat, over = soak_report.flat(rows)
    lat = np.array([o.done_s - o.planned_s for o in outcomes if o.ok]) * 1e3
    failed = [o for o in outcomes if not o.ok]
    codes: dict[str, int] = {}
    for o in failed:
        codes[o.code] = codes.get(o.code, 0) + 1
    report = {
        "config": {"minutes": cfg.minutes, "rps": cfg.rps, "cv": cfg.cv, "seed": cfg.seed,
                   "inputs": cfg.inputs, "warmup_s": cfg.warmup, "period_s": cfg.period_s,
                   "restart_delay_s": cfg.restart_delay_s, "settle_s": cfg.settle_s,
                   "stack": cfg.stack_file, "functions": t.names, **cfg.extra},
        "requests": {"sent": len(outcomes), "ok": len(outcomes) - len(failed),
                     "failed": len(failed), "failed_outside_faults": len(outside),
                     "failed_codes": codes,
                     "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                     "p99_ms": float(np.percentile(lat, 99)) if lat.size else None},
        "memory": {"rows": rows, "flat": ok_flat, "over_goal": over,
                   "timeline": mem.timeline},
        "failures": [{"sent_s": round(o.planned_s, 3), "done_s": round(o.done_s, 3),
                      "code": o.code} for o in failed][:500],
        "replicas": tracker.summary(),
        "faults": [f.to_json() for f in faults],
        "leaks": {"shm_ours_after_down": shm_ours, "shm_new_any_owner": shm_new,
                  "processes_after_down": left, "cleaned_up_by_soak": cleaned},
        "replica_timeline": tracker.timeline[:: max(1, int(1 / tracker.every_s))],
        "tracker_misses": tracker.misses,
        "end_s": round(end_s, 3),
    }
    _print(con, cfg, report, rows, tracker, faults)
    if cfg.json_path:
        cfg.json_path.parent.mkdir(parents=True, exist_ok=True)
        cfg.json_path.write_text(json.dumps(report, indent=1, default=str))
        con.print(f"wrote {cfg.json_path}")
    return report


def _clean(shm_dir: Path, left: dict[str, list[int]]) -> list[str]:
    """After the leak figures are taken: kill what ``down`` left and remove our T1 dir, so
    one soak's leak does not become the next run's baseline."""
    done = []
    for kind, pids in left.items():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed {kind} pid {pid}")
            except ProcessLookupError:
                pass
    if shm_dir.exists():
        shutil.rmtree(shm_dir, ignore_errors=True)
        done.append(f"removed {shm_dir}")
    return done


def _print(con: Console, cfg: SoakConfig, rep: dict[str, Any], rows: dict[str, Any],
           tracker: soak_probe.Tracker, faults: list[Fault]) -> None:
    rq = rep["requests"]
    soak_report.print_memory(con, rows, cfg.warmup, rep["end_s"])
    soak_report.print_replicas(con, tracker.summary())
    if faults:
        soak_report.print_faults(con, faults, cfg.restart_delay_s)
    lk = rep["leaks"]
    c = rep["config"]
    con.print(f"machine: {c['cpus']} CPUs shared with other sessions; load average (1/5/15 min) "
              f"{c['loadavg_start']} at the start, {c['loadavg_end']} at the end")
    def p(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"
    con.print(f"requests: {rq['sent']} sent, {rq['ok']} ok, {rq['failed']} failed "
              f"({rq['failed_outside_faults']} outside injected faults) {rq['failed_codes']}; "
              f"p50 {p(rq['p50_ms'])} ms, p99 {p(rq['p99_ms'])} ms (from planned send time)")
    over = rep["memory"]["over_goal"]
    third = ", ".join(f"{c} {rows[c]['growth'] * 100:+.1f}%" for c in soak_report.THIRD_PARTY
                      if c in rows and rows[c]["growth"] is not None)
    con.print(f"memory of our processes: {'flat' if not over else 'NOT flat'} (goal < "
              f"{soak_report.GOAL_GROWTH:.0%} growth after the warm-up; replicas: those alive "
              "throughout)"
              + (f": over it {', '.join(over)}" if over else "")
              + (f"; third-party, not judged: {third}" if third else ""))
    procs = {k: v for k, v in lk["processes_after_down"].items() if v}
    shm = lk["shm_ours_after_down"]
    con.print(f"/dev/shm after down: {'LEAKED ' + str(shm) if shm else 'no leak'}"
              f" (T1 dir of this run); new /dev/shm entries of any owner: "
              f"{lk['shm_new_any_owner'] or 'none'}")
    con.print(f"processes after down: {procs or 'none left'}"
              + (f"; the soak cleaned up: {lk['cleaned_up_by_soak']}" if lk["cleaned_up_by_soak"]
                 else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m checks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rps", type=float, default=4.0, help="mean requests per second")
    p.add_argument("--cv", type=float, default=3.0, help="CV of inter-arrivals (burstiness)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", type=int, default=4, help="sentences per request")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before the first memory snapshot (default 10%% of the run, "
                        "30..300 s)")
    p.add_argument("--faults", action="store_true",
                   help="each kind once, spread over the run (or as --fault-at says): kill -9, "
                        "SIGSTOP for 10 s for hung_replica")
    p.add_argument("--fault-at", action="append", default=[], metavar="SECONDS:KIND",
                   help="a fault at SECONDS after the load starts; KIND: replica, zygote, "
                        "keys_manager, plugin, redis, prometheus, hung_replica, gateway "
                        "(repeatable; implies --faults)")
    p.add_argument("--restart-delay", type=float, default=2.0,
                   help="the supervisor's delay before restarting plugin/Redis/Prometheus")
    p.add_argument("--period", type=float, default=2.0, help="plugin control period (s)")
    p.add_argument("-f", "--file", default="stack.yml")
    p.add_argument("--state-dir", type=Path, default=Path(".quart/soak"))
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = SoakConfig(minutes=a.minutes, rps=a.rps, cv=a.cv, seed=a.seed, inputs=a.inputs,
                     warmup_s=a.warmup, restart_delay_s=a.restart_delay, period_s=a.period,
                     stack_file=a.file, state_dir=a.state_dir, json_path=a.json,
                     progress=not a.no_progress)
    try:
        if a.fault_at:
            cfg.faults = parse_schedule(a.fault_at)
        elif a.faults:
            cfg.faults = default_schedule(cfg.duration_s, cfg.warmup)
    except ScheduleError as e:
        p.error(str(e))
    if cfg.faults:
        late = [f for f in cfg.faults if f.at_s >= cfg.duration_s]
        if late:
            p.error(f"fault(s) after the end of the run ({cfg.duration_s:g}s): "
                    f"{[f'{f.at_s:g}:{f.kind}' for f in late]}")
    con = Console(width=None if sys.stdout.isatty() else 160)
    try:
        rep = run(cfg, con)
    except KeyboardInterrupt:
        con.print("[yellow]interrupted; everything the soak started was stopped[/yellow]")
        return 130
    except (deploy.DeployError, plugin_services.ServiceError, requests.RequestException,
            RuntimeError) as e:
        con.print(f"[red]error:[/red] {e}")
        return 1
    lk = rep["leaks"]
    good = rep["requests"]["failed_outside_faults"] == 0 and rep["memory"]["flat"] and \
        not lk["shm_ours_after_down"] and not any(lk["processes_after_down"].values()) and \
        all(f["recovery_s"] is not None for f in rep["faults"])
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
