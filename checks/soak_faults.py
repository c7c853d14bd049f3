"""The soak's fault schedule: kill -9 a part of the running system, watch it come back.

Who brings each part back decides what the soak may do after the kill:

* ``replica``, ``zygote``, ``keys_manager`` are our system's job.  The soak
  only kills (SIGKILL, a real signal) and watches: the provider's reconcile
  loop must replace a dead replica, keys_manager must make a zygote again,
  the provider's launcher must start a new agent.  Nothing here restarts them.
* ``plugin``, ``redis``, ``prometheus`` are restarted by the soak acting as
  the supervisor a cluster has (kubelet restarting a crashed container): after
  a fixed ``restart_delay_s``, same command, same port, same data directory.
* ``gateway`` (kill -9 of the process serving the gateway and provider, the pid in
  ``serve.json``) is our system's job too: ``quart-faas up``'s supervisor must restart it
  and the restarted provider adopt the live replicas (issue 18, finding 1).
* ``hung_replica`` stops the busiest replica with SIGSTOP for ``HANG_S`` seconds, then
  SIGCONT: it is not dead, it does not answer; the provider must eject and replace it
  (local_provider/outliers.py; finding 2) long before the SIGCONT.

Recovery of a fault is two instants after the kill, and the later one counts:

* *healthy*: the component-specific check below passes (polled every 0.25 s);
* *serving*: the send time of the first request that succeeded after the last
  failed request attributed to the fault (the kill itself when none failed, or
  when that success was sent before the kill and was in flight through it):
  requests sent from then on succeed again.  Send times, not completion times,
  so that queueing delay under load is not mistaken for an outage.

A failed request is *lost to* a fault when it was still in flight at the kill
or planned after it, and planned before the component was healthy again plus
``settle_s`` (and before the next fault).  Every other failure is reported as
a failure outside the injected faults.
"""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from checks.soak_probe import Target, agent_status, service_pid, stats
from keys_manager.client import AgentError, call
from local_provider import plugin_services, prometheus, services

KINDS = ("replica", "zygote", "keys_manager", "plugin", "redis", "prometheus", "hung_replica",
         "gateway")  # the gateway last: on a system that cannot restart it, the rest is lost
SUPERVISED = frozenset({"plugin", "redis", "prometheus"})
BUSY_WAIT_S = 5.0  # a replica kill waits up to this long for a replica with calls in flight
HANG_S = 10.0  # a hung replica is stopped this long (SIGSTOP, then SIGCONT)
HEALTH = {
    "replica": "(the busiest, waiting up to 5 s for one with calls in flight) killed pid "
               "gone from the provider's stats and ready >= desired for its function",
    "zygote": "keys_manager lists a live zygote of the function again (a new pid)",
    "keys_manager": "an agent answers on the socket (a new pid) and on its /healthz",
    "plugin": "restarted; /healthz leader with Redis up, and a control cycle acted after the kill",
    "redis": "restarted; answers PING, the plugin sees Redis up and completed a cycle after",
    "prometheus": "restarted; /-/ready, and the plugin completed a cycle (not a hold) after",
    "hung_replica": f"(the busiest; SIGCONT {HANG_S:g}s after SIGSTOP) ejected: its pid gone "
                    "from the provider's stats and ready >= desired for its function",
    "gateway": "the gateway answers /healthz from a new pid (serve.json) and lists functions",
}


class ScheduleError(ValueError):
    pass


@dataclass
class Fault:
    at_s: float
    kind: str
    target: str = ""
    pid: int | None = None
    function: str = ""
    t_kill: float | None = None  # seconds since the load started
    t_restart: float | None = None  # supervised kinds: when the soak restarted it
    t_healthy: float | None = None
    t_serving: float | None = None
    recovery_s: float | None = None
    lost: int = 0
    lost_codes: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_schedule(items: list[str]) -> list[Fault]:
    """``["60:replica", "120.5:zygote"]`` -> faults sorted by time."""
    out = []
    for item in items:
        at, sep, kind = item.partition(":")
        try:
            t = float(at)
        except ValueError:
            t = -1.0
        if not sep or t < 0 or kind not in KINDS:
            raise ScheduleError(f"--fault-at {item!r}: want SECONDS:KIND, KIND one of "
                                f"{', '.join(KINDS)}")
        out.append(Fault(t, kind))
    return sorted(out, key=lambda f: f.at_s)


def default_schedule(duration_s: float, warmup_s: float) -> list[Fault]:
    """Every kind once, in KINDS order, evenly spread after the warm-up; each fault gets
    the first 20 % of its slot as a lead-in and the rest to recover in."""
    slot = (duration_s - warmup_s) / len(KINDS)
    if slot <= 0:
        raise ScheduleError(f"no time for faults: duration {duration_s:g}s, warm-up "
                            f"{warmup_s:g}s")
    return [Fault(round(warmup_s + (i + 0.2) * slot, 1), k) for i, k in enumerate(KINDS)]


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while services.pid_alive(pid) and time.monotonic() < deadline:  # reaps our children
        time.sleep(0.01)


def _busiest_replica(t: Target, rng: random.Random) -> tuple[str, int, int]:
    """(function, pid, calls in flight) of the busiest ready replica, waiting up to
    ``BUSY_WAIT_S`` for one with calls in flight (the worst case: those calls are hit)."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        s = stats(t) or {}
        ready = [(int(i.get("inflight", 0)), fn, int(i["pid"])) for fn, v in s.items()
                 for i in v.get("instances", [])
                 if i.get("ready") and i.get("pid") and not i.get("draining")]
        busiest = max((n for n, _, _ in ready), default=0)
        if busiest or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not ready:
        raise RuntimeError("no ready replica to kill")
    _, function, pid = rng.choice(sorted(r for r in ready if r[0] == busiest))
    return function, pid, busiest


def gateway_pid(t: Target, must: bool = True) -> int | None:
    """The pid serving the gateway (``serve.json``, written by the serving process itself:
    under a supervisor, the recorded service may be the supervisor)."""
    try:
        pid = int(json.loads((Path(t.state_dir) / "serve.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        pid = None
    if pid is None or not services.pid_alive(pid):
        pid = service_pid(t, "gateway")
    if pid is None and must:
        raise RuntimeError("the gateway is not running")
    return pid


def _decided_after(t: Target, wall: float, s: requests.Session) -> bool:
    """The plugin acted (a real cycle, not a hold) after ``wall`` (its clock is time.time)."""
    try:
        h = s.get(f"{t.plugin}/healthz", timeout=1).json()
        if not (h.get("ok") and h.get("leader") and h.get("redis")):
            return False
        ds = s.get(f"{t.plugin}/decisions", params={"n": 30}, auth=t.auth, timeout=2).json()
    except (requests.RequestException, ValueError):
        return False
    return any(d.get("t", 0) > wall and d.get("policy") != "hold" for d in ds)


class Injector:
    """One thread per fault: wait for its time, kill, restart if supervised, watch health."""

    def __init__(self, t: Target, faults: list[Fault], t0: float, end_s: float, seed: int = 0,
                 restart_delay_s: float = 2.0, grace_s: float = 30.0,
                 say: Callable[[str], None] = print) -> None:
        self.t, self.faults, self.t0, self.end_s = t, faults, t0, end_s
        self.restart_delay_s, self.grace_s = restart_delay_s, grace_s
        self.say = say
        self.rng = random.Random(seed)
        self.stop, self.abort = threading.Event(), threading.Event()
        self.threads = [threading.Thread(target=self._one, args=(f,), daemon=True,
                                         name=f"fault-{f.kind}") for f in faults]

    def start(self) -> Injector:
        for th in self.threads:
            th.start()
        return self

    def join(self, abort: bool = False) -> None:
        """After the load: faults not yet injected are dropped; watchers go on for up to
        ``grace_s`` past the end of the load (all of them stop at once with ``abort``)."""
        self.stop.set()
        if abort:
            self.abort.set()
        deadline = time.monotonic() + self.grace_s + 30
        for th in self.threads:
            th.join(max(0.1, deadline - time.monotonic()))

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _one(self, f: Fault) -> None:
        if self.stop.wait(max(0.0, f.at_s - self.now())):
            f.error = "not injected: the run ended first"
            return
        try:
            self._inject(f)
        except Exception as e:  # noqa: BLE001 - a fault that cannot be injected is reported
            f.error = f"{type(e).__name__}: {e}"
            self.say(f"fault {f.kind} at {f.at_s:g}s: {f.error}")
            return
        check = self._check(f, time.time())
        s = requests.Session()
        while self.now() < self.end_s + self.grace_s and not self.abort.is_set():
            try:
                if check(s):
                    f.t_healthy = self.now()
                    self.say(f"fault {f.kind} ({f.target}): healthy again "
                             f"{f.t_healthy - (f.t_kill or 0):.1f}s after the kill")
                    return
            except Exception:  # noqa: BLE001, S110 - a failing probe means "not yet"
                pass
            time.sleep(0.25)
        f.error = f"not healthy again {self.grace_s:g}s after the load ended"

    def _inject(self, f: Fault) -> None:
        t = self.t
        if f.kind in ("replica", "hung_replica"):
            f.function, f.pid, busy = _busiest_replica(t, self.rng)
            f.target = f"{busy} call(s) in flight"
        elif f.kind == "zygote":
            st = agent_status(t) or {}
            cands = sorted((z["function"], int(z["pid"])) for z in st.get("zygotes", [])
                           if z.get("alive"))
            if not cands:
                raise RuntimeError("no live zygote to kill (is keys_manager up?)")
            f.function, f.pid = self.rng.choice(cands)
        elif f.kind == "keys_manager":
            f.pid = int(call(t.keys_socket, {"op": "ping"}, timeout_s=3)["pid"])
        elif f.kind == "gateway":
            f.pid = gateway_pid(t)
        else:
            f.pid = service_pid(t, f.kind)
            if f.pid is None:
                raise RuntimeError(f"{f.kind} is not running")
        f.target = f"{f.function + ' ' if f.function else ''}pid {f.pid}" + \
            (f" ({f.target})" if f.target else "")
        assert f.pid is not None
        if f.kind == "hung_replica":
            self._hang(f, f.pid)
            return
        f.t_kill = self.now()  # before the signal: a call it fails may finish microseconds later
        try:
            _kill(f.pid)
        except ProcessLookupError:
            if f.kind != "replica":
                raise
            # Stopped by a scale-down between the pick and the kill: pick again, once.
            f.function, f.pid, busy = _busiest_replica(self.t, self.rng)
            f.target = f"{f.function} pid {f.pid} ({busy} call(s) in flight; the first pick "\
                       f"had exited)"
            f.t_kill = self.now()
            _kill(f.pid)
        self.say(f"fault {f.kind}: kill -9 {f.target} at {f.t_kill:.1f}s")
        if f.kind in SUPERVISED:
            time.sleep(self.restart_delay_s)
            self._restart(f.kind)
            f.t_restart = self.now()
            self.say(f"supervisor (the soak, as a kubelet would): restarted {f.kind} "
                     f"{self.restart_delay_s:g}s after the kill (pid {service_pid(t, f.kind)})")

    def _hang(self, f: Fault, pid: int) -> None:
        """SIGSTOP now, SIGCONT ``HANG_S`` seconds later (sooner when the run aborts) from
        another thread: recovery (the ejection) is watched from the stop on."""
        f.t_kill = self.now()
        os.kill(pid, signal.SIGSTOP)
        self.say(f"fault hung_replica: SIGSTOP {f.target} at {f.t_kill:.1f}s")

        def resume() -> None:
            self.abort.wait(HANG_S)
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # ejected meanwhile (killed): nothing to continue
            f.t_restart = self.now()
            self.say(f"fault hung_replica: SIGCONT pid {pid} at {f.t_restart:.1f}s")

        threading.Thread(target=resume, daemon=True, name="fault-sigcont").start()

    def _restart(self, kind: str) -> None:
        t, quiet = self.t, (lambda m: None)
        if kind == "plugin":
            plugin_services.start_plugin(t.state_dir, t.gateway, t.prometheus, t.redis_url,
                                         t.plugin_port, quiet, t.plugin_env)
        elif kind == "redis":
            plugin_services.ensure_redis(t.state_dir, t.redis_url, quiet)
        else:
            cfg = yaml.safe_load((Path(t.state_dir) / "prometheus.yml").read_text())
            targets = {c["job_name"]: c["static_configs"][0]["targets"]
                       for c in cfg["scrape_configs"]}
            interval = float(str(cfg["global"]["scrape_interval"]).rstrip("s"))
            port = int(t.prometheus.rsplit(":", 1)[1])
            prometheus.start(t.state_dir, port, targets, interval)

    def _check(self, f: Fault, wall: float) -> Callable[[requests.Session], bool]:
        t = self.t
        if f.kind in ("replica", "hung_replica"):
            def replica(s: requests.Session) -> bool:
                fn = (stats(t, s) or {}).get(f.function)
                if fn is None:
                    return False
                pids = {i.get("pid") for i in fn.get("instances", [])}
                return f.pid not in pids and fn.get("availableReplicas", 0) >= \
                    max(1, fn.get("replicas", 1))
            return replica
        if f.kind == "gateway":
            def gateway(s: requests.Session) -> bool:
                pid = gateway_pid(t, must=False)
                return pid not in (None, f.pid) and s.get(f"{t.gateway}/healthz",
                                                          timeout=1).ok and stats(t, s) is not None
            return gateway
        if f.kind == "zygote":
            def zygote(s: requests.Session) -> bool:
                st = agent_status(t, 1.0) or {}
                return any(z["function"] == f.function and z.get("alive") and z["pid"] != f.pid
                           for z in st.get("zygotes", []))
            return zygote
        if f.kind == "keys_manager":
            def agent(s: requests.Session) -> bool:
                try:
                    pid = int(call(t.keys_socket, {"op": "ping"}, timeout_s=1)["pid"])
                except AgentError:
                    return False
                return pid != f.pid and s.get(f"{t.keys_metrics}/healthz", timeout=1).ok
            return agent
        if f.kind == "redis":
            def redis_(s: requests.Session) -> bool:
                return plugin_services.redis_answers(t.redis_url) and _decided_after(t, wall, s)
            return redis_
        if f.kind == "prometheus":
            def prom(s: requests.Session) -> bool:
                return s.get(f"{t.prometheus}/-/ready", timeout=1).ok and \
                    _decided_after(t, wall, s)
            return prom
        return lambda s: _decided_after(t, wall, s)


@dataclass(frozen=True)
class Outcome:
    """One request as the soak scores it: times in seconds since the load started."""

    planned_s: float
    done_s: float
    ok: bool
    code: str = "200"


def score(faults: list[Fault], outcomes: list[Outcome], end_s: float,
          settle_s: float = 5.0) -> list[Outcome]:
    """Fill each fault's t_serving, recovery_s and lost; return the failures outside faults."""
    failed = [o for o in outcomes if not o.ok]
    attributed: set[int] = set()
    done = sorted((f for f in faults if f.t_kill is not None), key=lambda f: f.t_kill or 0)
    for i, f in enumerate(done):
        kill = float(f.t_kill or 0)
        nxt = done[i + 1].t_kill if i + 1 < len(done) else float("inf")
        healthy = f.t_healthy if f.t_healthy is not None else end_s
        until = min(float(nxt or float("inf")), healthy + settle_s)
        lost = [j for j, o in enumerate(failed) if o.done_s >= kill and o.planned_s < until
                and j not in attributed]
        attributed.update(lost)
        f.lost = len(lost)
        f.lost_codes = {}
        for j in lost:
            f.lost_codes[failed[j].code] = f.lost_codes.get(failed[j].code, 0) + 1
        if lost:  # served again from the first success sent after the last loss
            since = max(failed[j].planned_s for j in lost)
            oks = [o.planned_s for o in outcomes if o.ok and o.planned_s > since]
            f.t_serving = max(kill, min(oks)) if oks else None
        else:  # nothing was lost: requests never stopped succeeding
            f.t_serving = kill
        if f.t_healthy is not None and f.t_serving is not None:
            f.recovery_s = round(max(f.t_healthy, f.t_serving) - kill, 3)
    return [o for j, o in enumerate(failed) if j not in attributed]
