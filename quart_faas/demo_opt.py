"""``make demo PIPELINE=opt``: the streaming decoder pipeline of stack.yml on this machine.

Partitions the seeded OPT-125M decoder into 2 stages if needed, deploys
stack.yml's ``opt`` pipeline (``quart-faas up --pipeline opt``), streams one
generation to the console token by token, forks a second replica of the last
stage from its zygote, then sends an open-loop burst (gamma inter-arrivals)
of streamed generations and prints TTFT and per-token latency measured at
the client next to each stage's own compute (Server-Timing) and the gateway's
per-stage figures from Prometheus.  The autoscaling plugin is not started
here: ``make demo`` shows it on the MiniLM pipeline.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import requests
from rich.console import Console
from rich.table import Table

from benchmark import openloop, streamload
from benchmark.report.progress import Bars
from benchmark.studies.decoder import per_token, prompt
from contracts.manifest import has_manifest
from contracts.stack import load_stack
from local_provider import deploy
from quart_faas.metrics_query import GatewayMetrics

MODEL = "opt-125m-seeded"


def run(a: argparse.Namespace, con: Console) -> int:
    stack = load_stack(a.file)
    fn0 = stack.functions["opt-stage-0"]
    model_dir = fn0.environment.get("QUART_MODEL_DIR", ".quart/models/opt-125m-2")
    if not has_manifest(stack.root / model_dir):
        from functions.partitioner import partition

        con.print(f"partitioning {MODEL} (seeded weights, byte tokenizer) into 2 stages -> "
                  f"{model_dir}")
        partition(stack.root / model_dir, int(fn0.environment.get("QUART_STAGES", "2")),
                  model=fn0.environment.get("QUART_MODEL", MODEL))
    t0 = time.perf_counter()
    stack, ep = deploy.up(a.file, a.gateway, a.state_dir, a.prometheus_url, say=con.print,
                          pipeline="opt")
    con.print(f"decoder pipeline ready in {time.perf_counter() - t0:.1f}s")
    auth = (deploy.USER, deploy.password_file(a.state_dir).read_text().strip())
    url = f"{ep.gateway}/function/opt-stage-0"
    _one_live(con, url, a.tokens)

    last = "opt-stage-1"
    t1 = time.perf_counter()
    requests.post(f"{ep.gateway}/system/scale-function/{last}", auth=auth, timeout=10,
                  json={"serviceName": last, "replicas": 2}).raise_for_status()
    deploy.wait_available(ep.gateway, auth, {last: 2}, 120)
    stats = requests.get(f"{ep.gateway}/system/quart/stats", auth=auth, timeout=10).json()
    tiers = ", ".join(f"{i['tier']} {i.get('spawn_ms') or 0:.0f} ms"
                      for i in sorted(stats[last]["instances"], key=lambda i: i["index"]))
    con.print(f"scaled {last} 1 -> 2: ready {(time.perf_counter() - t1) * 1e3:.0f} ms after the "
              f"request (replicas: {tiers}); a step on the other replica finds no KV session "
              "and is rebuilt from position 0 (functions/stage/decoder_wire.py)")

    rate = a.rate if a.rate is not None else 0.5
    n = max(1, int(rate * a.seconds))
    offsets = openloop.gamma_arrivals(rate, a.cv, n, a.seed)
    con.print(f"sending {n} streamed generations open-loop: mean {rate:g}/s, CV {a.cv:g}, "
              f"{a.tokens} new tokens each, over {offsets[-1]:.1f}s")
    metrics = GatewayMetrics(ep.prometheus) if ep.prometheus else None

    def body(i: int) -> bytes:
        return json.dumps({"prompt": prompt(i, 64), "max_new_tokens": a.tokens}).encode()

    start = time.time()
    with Bars() as bars:
        burst = bars.add("burst", total=n, unit="gen")
        res, _ = streamload.run(url, body, offsets,
                                on_done=lambda r: bars.update(burst, advance=1))
    _report(con, res, metrics, f"{int(time.time() - start) + 5}s")
    return 0 if all(r.ok for r in res) else 1


def _one_live(con: Console, url: str, tokens: int) -> None:
    """One generation, printed as it streams: the first token's latency is the TTFT."""
    text = "Serverless decoding, one token at a time:"
    con.print(f"[bold]prompt[/bold] {text!r} -> ", end="")
    t0 = time.perf_counter()
    ttft = None
    with requests.post(url, json={"prompt": text, "max_new_tokens": tokens}, stream=True,
                       timeout=120) as r:
        r.raise_for_status()
        for raw in r.iter_lines():
            doc = json.loads(raw)
            if doc.get("done"):
                break
            ttft = ttft or time.perf_counter() - t0
            con.print(doc.get("text", ""), end="", markup=False, highlight=False)
    total = time.perf_counter() - t0
    con.print(f"\n[dim](seeded weights and a byte tokenizer: the text is noise; ids outside the "
              f"byte range show as <id>)[/dim]\nTTFT {ttft * 1e3 if ttft else float('nan'):.0f} "
              f"ms, {tokens} tokens in {total:.2f}s")


def _report(con: Console, res: list[streamload.StreamResult], metrics: GatewayMetrics | None,
            window: str) -> None:
    good = [r for r in res if r.ok]
    pt = per_token(res)
    t = Table(title="Decoder pipeline, measured at the client (from planned send time)")
    for col in ("figure", "avg ms", "p50 ms", "p95 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for name, xs in (("TTFT", [r.ttft_s for r in good]), ("inter-token gap", pt["gaps_s"]),
                     ("time per output token", pt["tpot_s"]),
                     ("end to end", [r.latency_s for r in good])):
        ms = np.asarray(xs) * 1e3
        if ms.size:
            t.add_row(name, f"{ms.mean():.1f}", *(f"{np.percentile(ms, q):.1f}"
                                                  for q in (50, 95, 99)))
    con.print(t)
    con.print("stage compute per token (Server-Timing): " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in pt["stage_step_ms"].items()) + "; per prefill: " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in pt["stage_prefill_ms"].items()))
    con.print(f"{len(good)}/{len(res)} generations ok, {pt['tokens']} tokens")
    if metrics is not None:
        p50 = metrics.latency_quantile(0.5, window)
        counts = metrics.invocations()
        for n in ("opt-stage-0", "opt-stage-1"):
            con.print(f"gateway {n}: {counts.get(n, 0):.0f} invocations, p50 "
                      f"{p50.get(n, float('nan')) * 1e3:.1f} ms")
        con.print("opt-stage-0's gateway latency is a whole streamed generation; opt-stage-1 is "
                  "invoked once per token")
