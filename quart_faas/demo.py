"""``make demo``: the MiniLM pipeline on this machine, autoscaled under a bursty load.

Starts what is missing (local gateway + provider + keys_manager, Prometheus,
Redis, the autoscaling plugin), deploys stack.yml, scales one stage by hand
to show how fork-started replicas come up, then sends an open-loop burst
(gamma inter-arrivals, CV 4) for about a minute with a progress bar while
the plugin scales; prints a timeline of replicas and p99 per stage with the
plugin's reasons, saves it as a PNG, prints a per-stage table read back from
Prometheus, and stops everything it started — on Ctrl-C too.

``--pipeline opt`` (or QUART_DEMO_PIPELINE=opt) shows the streaming decoder
pipeline instead, with its time to first token (``demo_opt.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import requests
from rich.console import Console
from rich.table import Table

from benchmark import openloop
from benchmark.report.progress import Bars
from contracts.manifest import has_manifest
from contracts.stack import load_stack
from local_provider import deploy, plugin_services, services
from quart_faas import demo_timeline
from quart_faas.metrics_query import GatewayMetrics

SENTENCES = [
    "Serverless platforms scale functions with the load.",
    "A large model is cut into stages that run as a pipeline.",
    "Bursts travel down the pipeline from stage to stage.",
    "Copy-on-write forking makes a new replica cheap.",
    "The quick brown fox jumps over the lazy dog.",
    "Latency is set by the slowest, most congested stage.",
    "OpenFaaS exposes gateway metrics to Prometheus.",
    "Embeddings map sentences to points in a vector space.",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-f", "--file", default="stack.yml")
    p.add_argument("--gateway", default="http://127.0.0.1:8080")
    p.add_argument("--prometheus-url", default="http://127.0.0.1:9090")
    p.add_argument("--state-dir", type=Path, default=Path(".quart"))
    p.add_argument("--seconds", type=float, default=60.0, help="length of the burst")
    p.add_argument("--pipeline", choices=("minilm", "opt"),
                   default=os.environ.get("QUART_DEMO_PIPELINE") or "minilm",
                   help="minilm (embeddings, autoscaled) or opt (streaming decoder, TTFT)")
    p.add_argument("--rate", type=float, default=None,
                   help="mean requests per second (8 for minilm, 0.5 for opt)")
    p.add_argument("--tokens", type=int, default=32, help="opt: new tokens per generation")
    p.add_argument("--cv", type=float, default=4.0, help="burstiness (CV of inter-arrivals)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--plugin-port", type=int, default=8084)
    p.add_argument("--period", type=float, default=2.0, help="plugin control period (s)")
    p.add_argument("--png", type=Path, default=Path(".quart/demo-timeline.png"))
    p.add_argument("--inputs", type=int, default=4, help="sentences per request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale-to", type=int, default=4,
                   help="replicas of the middle stage in the scale-up shown first")
    a = p.parse_args(argv)
    con = Console()
    before = {s.name for s in services.recorded(a.state_dir)}
    try:
        if a.pipeline == "opt":
            from quart_faas import demo_opt

            return demo_opt.run(a, con)
        if a.rate is None:
            a.rate = 8.0
        return _run(a, con)
    except KeyboardInterrupt:
        con.print("[yellow]interrupted[/yellow]")
        return 130
    except (deploy.DeployError, RuntimeError, requests.RequestException,
            plugin_services.ServiceError) as e:
        con.print(f"[red]error:[/red] {e}")
        return 1
    finally:
        for svc in services.recorded(a.state_dir):
            if svc.name not in before:
                services.stop(a.state_dir, svc)
        con.print("stopped everything the demo started")


def _run(a: argparse.Namespace, con: Console) -> int:
    _partition_if_missing(a.file, con)
    t0 = time.perf_counter()
    stack, ep = deploy.up(a.file, a.gateway, a.state_dir, a.prometheus_url, say=con.print)
    con.print(f"pipeline ready in {time.perf_counter() - t0:.1f}s")
    auth = (deploy.USER, deploy.password_file(a.state_dir).read_text().strip())
    names = list(stack.functions)
    redis_url = plugin_services.ensure_redis(a.state_dir, a.redis_url, con.print)

    _show_scale_up(con, ep.gateway, auth, names, a.scale_to)
    plugin = plugin_services.start_plugin(
        a.state_dir, ep.gateway, ep.prometheus, redis_url, a.plugin_port, con.print,
        {"QUART_CONTROL_PERIOD_S": str(a.period)})

    url = f"{ep.gateway}/function/{names[0]}"
    body = json.dumps({"inputs": SENTENCES[: a.inputs]}).encode()
    for _ in range(3):  # warm-up, not counted in the burst
        requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    metrics = GatewayMetrics(ep.prometheus)
    time.sleep(2.5)
    counts0 = metrics.invocations()
    n = max(1, int(a.rate * a.seconds))
    offsets = openloop.gamma_arrivals(a.rate, a.cv, n, a.seed)
    con.print(f"sending {n} requests open-loop: mean {a.rate:g}/s, CV {a.cv:g}, "
              f"{a.inputs} sentences each, over {offsets[-1]:.1f}s; the plugin acts every "
              f"{a.period:g}s")
    start = time.time()
    sampler = demo_timeline.Sampler(ep.gateway, auth).start()
    with Bars() as bars:
        burst = bars.add("burst", total=n, unit="req")
        results = openloop.run(url, body, offsets,
                               on_done=lambda r: bars.update(burst, advance=1))
    time.sleep(max(3.0, 3 * a.period))  # the plugin reacts to the end of the burst too
    sampler.stop()
    end = time.time()
    decisions = [d for d in requests.get(f"{plugin}/decisions", params={"n": 1000}, auth=auth,
                                         timeout=10).json() if d.get("t", 0) >= start]
    demo_timeline.report(con, names, start, end, sampler,
                         demo_timeline.p99_series(ep.prometheus, start, end),
                         list(reversed(decisions)), offsets, a.png)
    window = f"{int(time.time() - start) + 5}s"
    _report(con, names, results, metrics, counts0, window)
    return 0 if all(r.status == 200 for r in results) else 1


def _partition_if_missing(stack_file: str, con: Console) -> None:
    """The demo's first run partitions the model the stack names; later runs reuse it."""
    stack = load_stack(stack_file)
    fn0 = stack.functions[next(iter(stack.functions))]
    model_dir = fn0.environment.get("QUART_MODEL_DIR", ".quart/models/minilm-3")
    if not has_manifest(stack.root / model_dir):
        from functions.partitioner import partition

        con.print(f"partitioning {fn0.environment.get('QUART_MODEL')} into "
                  f"{fn0.environment.get('QUART_STAGES')} stages -> {model_dir}")
        partition(stack.root / model_dir, int(fn0.environment.get("QUART_STAGES", "3")),
                  model=fn0.environment.get("QUART_MODEL", "all-MiniLM-L6-v2"))


def _show_scale_up(con: Console, gateway: str, auth: tuple[str, str], names: list[str],
                   scale_to: int) -> None:
    """A scale-up through the gateway's REST API, as the plugin will do, then back to 1."""
    mid = names[len(names) // 2]
    t1 = time.perf_counter()
    requests.post(f"{gateway}/system/scale-function/{mid}", auth=auth, timeout=10,
                  json={"serviceName": mid, "replicas": scale_to}).raise_for_status()
    deploy.wait_available(gateway, auth, {mid: scale_to}, 120)
    con.print(f"scaled {mid} 1 -> {scale_to} replicas: all ready "
              f"{(time.perf_counter() - t1) * 1e3:.0f} ms after the request")
    _spawn_table(con, gateway, auth, names)
    requests.post(f"{gateway}/system/scale-function/{mid}", auth=auth, timeout=10,
                  json={"serviceName": mid, "replicas": 1}).raise_for_status()


def _spawn_table(con: Console, gateway: str, auth: tuple[str, str], names: list[str]) -> None:
    """How each replica was made: T0 = forked from the stage's warm zygote (keys_manager),
    T1/T2/T3 = the zygote had to start, its weights found in shared memory / node disk /
    the origin partition."""
    stats = requests.get(f"{gateway}/system/quart/stats", auth=auth, timeout=10).json()
    t = Table(title="Replicas and how they started (keys_manager)")
    for col in ("function", "replica", "pid", "tier", "spawn ms", "ready ms", "zygote"):
        t.add_column(col, justify="left" if col in ("function", "tier") else "right")
    for n in names:
        for i in sorted(stats.get(n, {}).get("instances", []), key=lambda i: i["index"]):
            t.add_row(n, str(i["index"]), str(i.get("pid", "")), str(i.get("tier", "")),
                      f"{i.get('spawn_ms') or 0:.1f}", f"{i.get('ready_ms') or 0:.1f}",
                      str(i.get("zygote_pid") or ""))
    con.print(t)


def _report(con: Console, names: list[str], results: list[openloop.Result],
            metrics: GatewayMetrics, counts0: dict[str, float], window: str) -> None:
    counts = metrics.invocations()
    ok = metrics.invocations("200")
    p50 = metrics.latency_quantile(0.5, window)
    p99 = metrics.latency_quantile(0.99, window)
    reps = metrics.replicas()
    t = Table(title="Per stage, read back from Prometheus (gateway metrics)")
    for col in ("function", "requests", "non-200", "p50 ms", "p99 ms", "replicas"):
        t.add_column(col, justify="right" if col != "function" else "left")
    for n in names:
        req = counts.get(n, 0) - counts0.get(n, 0)
        t.add_row(n, f"{req:.0f}", f"{max(0.0, counts.get(n, 0) - ok.get(n, 0)):.0f}",
                  f"{p50.get(n, float('nan')) * 1e3:.1f}", f"{p99.get(n, float('nan')) * 1e3:.1f}",
                  f"{reps.get(n, 0):.0f}")
    con.print(t)
    lat = np.array([r.latency_s for r in results if r.status == 200]) * 1e3
    failed = sum(r.status != 200 for r in results)
    if lat.size:
        con.print(f"client (end to end, from planned send time): {lat.size} ok, {failed} failed, "
                  f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms")
    con.print("a stage's gateway latency includes the stages after it (synchronous chain)")


if __name__ == "__main__":
    raise SystemExit(main())
