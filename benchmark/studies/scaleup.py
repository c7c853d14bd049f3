"""Fast scale-up: how long a new replica of a stage takes, cold vs keys_manager's tiers.

Why: scaling a pipeline stage during a burst only helps if the new replica
serves before the burst is over.  keys_manager claims that a replica forked
from a warm zygote (T0) is ready in tens of milliseconds where a fresh process
(import torch, load the stage from disk) takes seconds, and that forked
replicas share the weights instead of copying them.  This checks both claims
end to end, through the API an autoscaler uses.

How the launcher makes the next replica, per tier:
  cold  a fresh python process, weights read from the origin partition (T3)
  T2    a fresh process mapping keys_manager's node-disk copy
  T1    a fresh process mapping the /dev/shm segment
  T0    fork() of the function's warm zygote (which maps the segment)

One trial: with one replica serving, POST {gateway}/system/scale-function to 2
at t0; poll GET /system/function until availableReplicas == 2 (time to ready);
send one stage request (batch 1 x 32 tokens) straight to the new replica (time
to first response = its answer - t0; its URL is looked up while it starts, as
a gateway knows it); scale back to 1 and wait until the new process is gone.
Tiers are interleaved round by round so that drift hits all alike; warm
inference is the same request to the replica that was already running, one per
round.  Memory: five replicas forked from the zygote, each having answered a
request; PSS summed over zygote + replicas, (sum at 5 - sum at 1) / 4 per
extra replica, against the stage's parameter bytes.

Targets (from the issue): T0 ready p50 <= 50 ms; cold/T0 ready >= 100x; T0
first response <= warm inference + 50 ms; PSS per extra replica <= 5 % of
the stage's parameter bytes.  Caveats: the partition files are in the page
cache after their first read, so "cold" is a warm-disk cold start (a lower
bound); the periodic T1 scrub is off during the run.  The provider runs in
this process (so the launcher's tier can be switched), and every poll costs it
CPU and GIL time: polls go to the provider's own /system/function (the value
the gateway forwards, one hop fewer) and sleep 1 ms, growing to 1 % of the
elapsed time (<= 20 ms) for slow starts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import urllib3

from benchmark import procmem
from benchmark.report.progress import Bars
from benchmark.studies.scaleup_report import judge, pct, report
from contracts.names import ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR
from functions.partitioner import partition
from functions.stage import codec
from functions.stage.bert import read_manifest
from keys_manager.client import AgentError, AgentLauncher
from keys_manager.procs import alive, start_time, terminate
from local_provider.auth import BasicAuth
from local_provider.config import ServeConfig
from local_provider.server import serve

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".quart" / "models"
TIERS = {"cold": ("process", "T3"), "T2": ("process", "T2"), "T1": ("process", "T1"),
         "T0": ("fork", "T1")}
TIMEOUT_S = 300.0


# name -> (cached partition under .quart/models, stages, partitioner arguments); the
# benchmarked stage is the last one, which calls no next function
MODELS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "minilm": ("minilm-3", 3, {"model": "all-MiniLM-L6-v2"}),
    "bert-large": ("bert-large-4", 4, {"synthetic": "bert-large", "seed": 0})}


def ensure_partition(key: str) -> tuple[Path, dict[str, Any]]:
    folder, stages, kwargs = MODELS[key]
    out = MODELS_DIR / folder
    if not (out / "manifest.json").is_file():
        print(f"partitioning into {out} ...", file=sys.stderr)
        partition(out, stages, force=out.exists(), **kwargs)
    man = read_manifest(out)
    if man["num_stages"] != stages:
        raise SystemExit(f"{out} holds {man['num_stages']} stages, expected {stages}")
    return out, man


class Bench:
    """The running provider, its agent and an HTTP pool; every pid seen is remembered."""

    def __init__(self, gateway: str, provider: str, auth: BasicAuth, launcher: AgentLauncher):
        self.gateway, self.provider, self.launcher = gateway, provider, launcher
        self.auth = {"Authorization": auth.header()}
        self.http = urllib3.PoolManager(num_pools=32, maxsize=8, retries=False)
        self.seen: dict[int, int | None] = {}
        self.shm_dir = ""

    def req(self, method: str, url: str, doc: Any = None, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0) -> Any:
        hdrs = dict(headers or self.auth)
        if doc is not None:
            body, hdrs["Content-Type"] = json.dumps(doc).encode(), "application/json"
        r = self.http.request(method, url, body=body, headers=hdrs, timeout=timeout)
        if r.status >= 300:
            raise RuntimeError(f"{method} {url}: {r.status} {r.data[:300]!r}")
        return r.data

    def available(self, name: str) -> int:
        data = self.req("GET", f"{self.provider}/system/function/{name}", timeout=10)
        return int(json.loads(data)["availableReplicas"])

    def scale(self, name: str, n: int) -> None:
        self.req("POST", f"{self.gateway}/system/scale-function/{name}",
                 {"serviceName": name, "replicas": n})

    def instances(self, name: str) -> list[dict[str, Any]]:
        stats = json.loads(self.req("GET", f"{self.provider}/system/quart/stats"))
        return list(stats.get(name, {}).get("instances", []))

    def call(self, url: str, body: bytes) -> float:
        """One stage request straight to a replica; its latency in ms."""
        t = time.perf_counter()
        self.req("POST", url + "/", body=body, headers={"Content-Type": codec.CONTENT_TYPE})
        return (time.perf_counter() - t) * 1e3

    def status(self) -> dict[str, Any]:
        st = self.launcher.status()
        self.shm_dir = st.get("shm_dir", self.shm_dir)
        self.seen.setdefault(int(st["pid"]), start_time(int(st["pid"])))
        for p in st["replicas"] + st["zygotes"]:
            self.seen.setdefault(int(p["pid"]), p.get("started"))
        return st

    def replicas(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.status()["replicas"] if r["function"] == name and r["alive"]]

    def zygote(self, name: str) -> dict[str, Any]:
        return next(z for z in self.status()["zygotes"] if z["function"] == name and z["alive"])

    def wait(self, name: str, n: int, gone: tuple[int, int | None] | None = None) -> float:
        """Seconds until ``n`` replicas are available (and ``n`` instances exist when scaling
        down, and the ``gone`` process has exited); polls fast, then backs off."""
        t0 = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - t0
            if self.available(name) == n and (gone is None or (
                    len(self.instances(name)) == n and not alive(*gone))):
                return elapsed
            if elapsed > TIMEOUT_S:
                raise TimeoutError(f"{name}: not {n} replica(s) after {TIMEOUT_S:g}s; see the "
                                   f"logs under {self.launcher.state_dir / 'logs'}")
            time.sleep(min(0.02, max(0.001, elapsed / 100)))


def stage_body(man: dict[str, Any], stage: int, seq: int = 32) -> bytes:
    hidden = torch.randn(1, seq, man["config"]["hidden_size"],
                         generator=torch.Generator().manual_seed(0))
    return codec.encode(hidden, torch.ones(1, seq, dtype=torch.int64),
                        {"model": man["model"], "stage": str(stage - 1)})


def deployment(name: str, mdir: Path, stage: int) -> dict[str, Any]:
    return {"service": name, "image": f"quart-bench/{name}:latest",
            "envVars": {"QUART_MODEL_DIR": str(mdir), "QUART_STAGE": str(stage),
                        "QUART_TORCH_THREADS": "1"},
            "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "5"},
            "annotations": {ANN_HANDLER: str(REPO / "functions" / "stage"),
                            ANN_TEMPLATE: str(REPO / "template" / "quart-python"),
                            ANN_WORKDIR: str(REPO)}}


def trial(b: Bench, name: str, base: dict[str, Any], body: bytes) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def find() -> None:  # the new replica's URL, looked up while it starts (a gateway knows it)
        while not found and time.perf_counter() - t0 < TIMEOUT_S:
            try:
                found.extend(r for r in b.replicas(name) if r["pid"] != base["pid"])
            except AgentError:  # the run is being stopped
                return
            time.sleep(0.002)

    t0 = time.perf_counter()
    b.scale(name, 2)
    finder = threading.Thread(target=find, daemon=True)
    finder.start()
    b.wait(name, 2)
    t_ready = time.perf_counter()
    finder.join()
    if not found:
        raise RuntimeError(f"{name}: keys_manager does not list the new replica")
    new = found[0]
    t_send = time.perf_counter()
    first_call = b.call(new["url"], body)
    t1 = time.perf_counter()
    info = next((i for i in b.instances(name) if i.get("pid") == new["pid"]), {})
    b.scale(name, 1)
    b.wait(name, 1, gone=(new["pid"], new.get("started")))
    if not alive(base["pid"], base.get("started")):
        raise RuntimeError(f"{name}: scaling down stopped the base replica, not the new one")
    return {"ready_ms": (t_ready - t0) * 1e3, "first_ms": (t1 - t0) * 1e3,
            "first_call_ms": first_call, "lookup_wait_ms": (t_send - t_ready) * 1e3,
            "tier": info.get("tier"), "spawn_ms": info.get("spawn_ms"),
            "provider_ready_ms": info.get("ready_ms")}


def memory(b: Bench, name: str, base: dict[str, Any], body: bytes) -> dict[str, Any]:
    """PSS of zygote + replicas with 1 and with 5 replicas forked from the zygote."""
    b.launcher.mode, b.launcher.weights = TIERS["T0"]
    zpid = int(b.zygote(name)["pid"])
    b.call(base["url"], body)
    time.sleep(0.5)
    one = procmem.group([zpid, base["pid"]])
    b.scale(name, 5)
    b.wait(name, 5)
    reps = b.replicas(name)
    for r in reps:
        b.call(r["url"], body)
    time.sleep(0.5)
    five = procmem.group([zpid] + [r["pid"] for r in reps])
    forked = sum(1 for r in reps if r.get("zygote_pid") == zpid)
    b.scale(name, 1)
    extra = [(r["pid"], r.get("started")) for r in reps if r["pid"] != base["pid"]]
    for g in extra:
        b.wait(name, 1, gone=g)
    return {"zygote_pid": zpid, "replicas_forked_from_zygote": forked, "one": one, "five": five,
            "pss_per_extra_bytes": (five["total"]["Pss"] - one["total"]["Pss"]) / 4}


def run_model(b: Bench, key: str, a: argparse.Namespace) -> dict[str, Any]:
    mdir, man = ensure_partition(key)
    stage = man["num_stages"] - 1
    info = man["stages"][stage]
    name = f"su-{key}-{stage}"
    body = stage_body(man, stage)
    b.launcher.mode, b.launcher.weights = TIERS["T0"]  # the first replica creates the zygote
    b.req("POST", f"{b.gateway}/system/functions", deployment(name, mdir, stage))
    res: dict[str, Any] = {"model": man["model"], "stage": stage, "stages": stage + 1,
                           "parameters": info["parameters"],
                           "parameter_bytes": info["parameter_bytes"]}
    try:
        b.wait(name, 1)
        base = b.replicas(name)[0]
        b.launcher.set_pool(name, 0)  # T0 is a fork on the call; the pool has its own study
        b.zygote(name)  # T0 trials need it: fails here, not later, if it is missing
        for _ in range(5):  # warm-up of the base replica
            b.call(base["url"], body)
        trials: dict[str, list[dict[str, Any]]] = {t: [] for t in TIERS}
        warm: list[float] = []
        rounds = a.warmup_rounds + a.trials
        with Bars() as bars:
            bar = bars.add(key, total=rounds * len(TIERS), unit="trial")
            for rnd in range(rounds):
                ms = b.call(base["url"], body)
                if rnd >= a.warmup_rounds:
                    warm.append(ms)
                for tier, setting in TIERS.items():
                    b.launcher.mode, b.launcher.weights = setting
                    r = trial(b, name, base, body)
                    if rnd >= a.warmup_rounds:
                        trials[tier].append(r)
                    bars.update(bar, advance=1, note=f"{tier} ready {r['ready_ms']:.0f} ms")
        warm += [b.call(base["url"], body) for _ in range(20 - len(warm))]  # >= 20 requests
        res["warm_ms"] = warm
        res["tiers"] = {}
        for tier, rs in trials.items():
            d: dict[str, Any] = {k: [r[k] for r in rs] for k in rs[0]}
            for k in ("ready_ms", "first_ms", "first_call_ms"):
                d[k.removesuffix("_ms") + "_p50_ms"] = pct(d[k], 50)
                d[k.removesuffix("_ms") + "_p95_ms"] = pct(d[k], 95)
            want = "cold" if tier == "cold" else tier
            d["tier_mismatches"] = sum(1 for x in d["tier"] if x != want)
            res["tiers"][tier] = d
        res["memory"] = memory(b, name, base, body)
    finally:
        with contextlib.suppress(Exception):  # best effort: the provider may be going down
            b.req("DELETE", f"{b.gateway}/system/functions", {"functionName": name})
            deadline = time.monotonic() + 60  # its replicas must not compete with the next model
            while b.replicas(name) and time.monotonic() < deadline:
                time.sleep(0.05)
    return res


def cleanup(b: Bench | None) -> None:
    """Belt and braces after serve() returned: nothing of ours may outlive the run."""
    if b is None:
        return
    for pid, started in b.seen.items():
        if alive(pid, started):
            print(f"warning: pid {pid} outlived the provider: stopping it", file=sys.stderr)
            terminate(pid, started, 2.0)
    shm = Path(b.shm_dir) if b.shm_dir else None
    if shm is not None and shm.exists() and shm.parent == Path("/dev/shm"):
        print(f"warning: {shm} outlived keys_manager: removing it", file=sys.stderr)
        shutil.rmtree(shm, ignore_errors=True)


def _log_to(logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    log = logging.FileHandler(logs / "scaleup.log")
    log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[log])


def _provider(state: Path) -> tuple[threading.Thread, threading.Event, AgentLauncher, Path]:
    """The provider to run in this process (not started), its stop event, its launcher (so
    that the tier can be switched) and the admin password file."""
    pw = state / "admin-password"
    pw.write_text(secrets.token_urlsafe(24) + "\n")
    pw.chmod(0o600)
    env = {**os.environ, "QUART_BASIC_AUTH_PASSWORD_FILE": str(pw)}
    cfg = ServeConfig.from_env(env, gateway_port=0, provider_port=0, metrics_port=0,
                               state_dir=state)
    launcher = AgentLauncher(state, env={**env, "QUART_KEYS_METRICS_PORT": "0",
                                         "QUART_KEYS_SCRUB_S": "0"})
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(cfg, "all"), name="serve", daemon=True,
                              kwargs={"stop": stop, "launcher": launcher})
    return server, stop, launcher, pw


def _start(server: threading.Thread, state: Path) -> dict[str, Any]:
    """Start the provider; its URLs once it wrote ``serve.json``."""
    server.start()
    deadline = time.monotonic() + 60
    while not (state / "serve.json").is_file():
        if not server.is_alive() or time.monotonic() > deadline:
            raise SystemExit(f"the provider did not start; see {state / 'logs'}")
        time.sleep(0.05)
    urls: dict[str, Any] = json.loads((state / "serve.json").read_text())
    return urls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="measured trials per tier and model")
    ap.add_argument("--warmup-rounds", type=int, default=1, help="rounds run but not counted")
    ap.add_argument("--models", default="minilm,bert-large", help=f"of {', '.join(MODELS)}")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--state-dir", help="logs and agent state (default: a temp dir, removed "
                                        "after a successful run)")
    a = ap.parse_args(argv)
    models = [k.strip() for k in a.models.split(",") if k.strip()]
    unknown = [k for k in models if k not in MODELS]
    if unknown or not models or a.trials < 1:
        ap.error(f"unknown model(s) {unknown}" if unknown else "need a model and --trials >= 1")
    torch.set_num_threads(1)
    state = Path(a.state_dir or tempfile.mkdtemp(prefix="quart-scaleup-")).absolute()
    _log_to(state / "logs")
    server, stop, launcher, pw = _provider(state)
    b: Bench | None = None
    ok = False
    (state / "serve.json").unlink(missing_ok=True)  # a stale one from a crashed run
    try:
        urls = _start(server, state)
        b = Bench(urls["gateway_url"], urls["provider_url"],
                  BasicAuth("admin", pw.read_text().strip()), launcher)
        out: dict[str, Any] = {"args": vars(a), "cpus": os.cpu_count(), "models": {}}
        for key in models:
            load0 = os.getloadavg()[0]
            res = run_model(b, key, a)
            res["loadavg_1m"] = [load0, os.getloadavg()[0]]  # others' load skews timings
            judge(res)
            out["models"][key] = res
            report(res, a.trials)
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
            print(f"\nwrote {a.json}")
        ok = True
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the provider", file=sys.stderr)
        return 130
    finally:
        if b is not None:
            with contextlib.suppress(Exception):  # the agent may be gone already
                b.status()  # a last look at what it runs, for cleanup()
        stop.set()
        server.join(timeout=60)
        launcher.close()
        cleanup(b)
        if ok and not a.state_dir:
            shutil.rmtree(state, ignore_errors=True)
        elif not ok:
            print(f"logs kept in {state / 'logs'}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
