"""What cutting the model into functions costs: monolith vs pipeline, same run.

Sequential requests (low load, no queueing), the same sentences, the same
torch thread count everywhere.  Three configurations, measured in this order
each round so that drift hits all of them alike:

  monolith   all stages in this process, a direct call (the baseline)
  1 stage    the whole model as one function behind the local gateway
  3 stages   the MiniLM pipeline of stack.yml behind the local gateway
  3 stages, waitress   the same with the replicas' former server (waitress + Flask,
             QUART_HTTP_SERVER=waitress): what the lean server (lean_http.py) saves

Prints p50 latency of each and the ratios to the monolith; the goal for the
3-stage pipeline is <= 1.15 at 8 sentences, <= 1.3 at 1.  ``Server-Timing`` splits each
pipeline's time into compute and everything else; the cost of one stage-to-stage hop is
(3-stage overhead - 1-stage overhead) / 2, since both pay the client's hop.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests
import torch

from contracts import server_timing
from functions.partitioner import partition
from functions.stage.bert import Monolith
from local_provider import deploy, services

REPO = Path(__file__).resolve().parents[2]
SENTENCES = [
    "A large model is cut into stages that run as a pipeline of functions.",
    "Bursts travel down the pipeline and the slowest stage sets the latency.",
    "Copy-on-write forking makes a new replica of a stage cheap to start.",
    "The gateway records invocation counts and latency histograms per function.",
    "Prometheus scrapes the gateway and the plugin reads the rates back.",
    "Every stage forwards its activations to the next one over HTTP.",
    "Safetensors carries the hidden states and the attention mask.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]


def stack_file(tmp: Path, model_dir: Path, stages: int, threads: int,
               server: str = "lean") -> Path:
    fns = {}
    prefix = f"bench{stages}" + ("w" if server != "lean" else "")
    for i in range(stages):
        fns[f"{prefix}-stage-{i}"] = {
            "lang": "quart-python", "handler": str(REPO / "functions" / "stage"),
            "image": "bench:latest",
            "environment": {"QUART_MODEL_DIR": str(model_dir), "QUART_STAGE": str(i),
                            "QUART_NEXT_FUNCTION": f"{prefix}-stage-{i + 1}"
                            if i < stages - 1 else "", "QUART_HTTP_SERVER": server,
                            "QUART_GATEWAY_URL": "${QUART_GATEWAY_URL}",
                            "QUART_TORCH_THREADS": str(threads)},
            "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "5"},
        }
    p = tmp / f"stack-{prefix}.yml"
    p.write_text(json.dumps({"version": 1.0, "provider": {"name": "openfaas"}, "functions": fns}))
    # handler paths are absolute, templates are looked up beside the stack file
    (tmp / "template").mkdir(exist_ok=True)
    if not (tmp / "template" / "quart-python").exists():
        (tmp / "template" / "quart-python").symlink_to(REPO / "template" / "quart-python")
    return p


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def _measure(a: argparse.Namespace, gateway: str, mono: Monolith, texts: list[str],
             body: bytes) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Sequential requests to the monolith and the pipelines; each pipeline's own compute
    time (Server-Timing) beside."""
    s = requests.Session()
    urls = {"1 stage": f"{gateway}/function/bench1-stage-0",
            "3 stages": f"{gateway}/function/bench3-stage-0",
            "3 st. waitress": f"{gateway}/function/bench3w-stage-0"}
    hdr = {"Content-Type": "application/json"}
    lat: dict[str, list[float]] = {"monolith": [], **{k: [] for k in urls}}
    compute: dict[str, list[float]] = {k: [] for k in urls}
    for i in range(a.warmup + a.requests):
        t = time.perf_counter()
        mono.encode(texts)
        d_mono = time.perf_counter() - t
        row, comp = {}, {}
        for name, url in urls.items():
            t = time.perf_counter()
            r = s.post(url, data=body, headers=hdr, timeout=60)
            row[name] = time.perf_counter() - t
            r.raise_for_status()
            comp[name] = server_timing.total_seconds(r.headers.get(server_timing.HEADER))
        if i >= a.warmup:
            lat["monolith"].append(d_mono)
            for k, v in row.items():
                lat[k].append(v)
                compute[k].append(comp[k])
    return lat, compute


def _print_results(a: argparse.Namespace, lat: dict[str, list[float]],
                   compute: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base = p50(lat["monolith"])
    print(f"\nall-MiniLM-L6-v2, {a.inputs} sentences/request, {a.requests} sequential "
          f"requests, {a.threads} torch thread(s)\n")
    print(f"{'configuration':<15} {'p50 ms':>8} {'p90 ms':>8} {'ratio':>7} {'compute':>8} "
          f"{'other':>7}")
    res = {}
    for k, xs in lat.items():
        q90 = statistics.quantiles(xs, n=10)[-1] * 1e3
        c = p50(compute[k]) if k in compute else p50(xs)
        res[k] = {"p50_ms": p50(xs), "p90_ms": q90, "ratio": p50(xs) / base,
                  "compute_p50_ms": c, "other_ms": p50(xs) - c}
        print(f"{k:<15} {p50(xs):8.2f} {q90:8.2f} {p50(xs) / base:7.3f} {c:8.2f} "
              f"{p50(xs) - c:7.2f}")
    for k in ("3 stages", "3 st. waitress"):
        res[k]["per_hop_ms"] = (res[k]["other_ms"] - res["1 stage"]["other_ms"]) / 2
    goal = 1.15 if a.inputs >= 8 else 1.3
    print(f"\ncompute: the stages' Server-Timing; other: gateway hops, replica HTTP, "
          f"(de)serialisation.\none stage-to-stage hop: {res['3 stages']['per_hop_ms']:.2f} ms "
          f"(replicas on waitress + Flask: {res['3 st. waitress']['per_hop_ms']:.2f} ms)")
    print(f"pipeline / monolith p50 ratio: {res['3 stages']['ratio']:.3f} (goal <= {goal})")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--inputs", type=int, default=8, help="sentences per request")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (everywhere)")
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    texts = (SENTENCES * ((a.inputs // len(SENTENCES)) + 1))[: a.inputs]
    body = json.dumps({"inputs": texts}).encode()
    tmp = Path(tempfile.mkdtemp(prefix="quart-overhead-"))
    state = tmp / "state"
    gw_port, pv_port, m_port = (services.free_port() for _ in range(3))
    gateway = f"http://127.0.0.1:{gw_port}"
    os.environ["QUART_GATEWAY_URL"] = gateway
    try:
        m1, m3 = tmp / "minilm-1", tmp / "minilm-3"
        partition(m1, 1, model="all-MiniLM-L6-v2")
        partition(m3, 3, model="all-MiniLM-L6-v2")
        mono = Monolith(m3)
        for stages, mdir, server in ((1, m1, "lean"), (3, m3, "lean"), (3, m3, "waitress")):
            deploy.up(str(stack_file(tmp, mdir, stages, a.threads, server)), gateway, state, "",
                      say=lambda s: None, provider_port=pv_port, metrics_port=m_port)
        lat, compute = _measure(a, gateway, mono, texts, body)
        res = _print_results(a, lat, compute)
        if a.json:
            Path(a.json).write_text(json.dumps({"args": vars(a), "results": res}, indent=2))
        return 0
    finally:
        deploy.down(state, say=lambda s: None)
        shutil.rmtree(tmp, ignore_errors=True)  # two partitions of MiniLM: ~180 MB


if __name__ == "__main__":
    raise SystemExit(main())
