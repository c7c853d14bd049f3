"""``quart-faas bench decoder``: TTFT and per-token latency of the streaming decoder pipeline.

Deploys stack.yml's ``opt`` pipeline (OPT-125M shapes, seeded weights, 2
stages) on the embedded gateway (partitioning it first if needed), or uses
``--gateway`` where it is already deployed, and sends an open-loop load
(gamma inter-arrivals, mean ``--rate``/s, CV ``--cv``) of streamed
generations to ``/function/opt-stage-0``.  Measured at the client, from each
request's planned send time: TTFT (first token), the gaps between tokens,
time per output token and end-to-end latency; from the stages' Server-Timing:
compute per token and stage.

Baselines measured in the same run, in this process on the same partition:
the unpartitioned model's prefill and per-token time (what the pipeline adds),
and one token with the KV cache vs recomputing the prefix (the design choice
in ``functions/stage/decoder_server.py``).  ``--encoder`` also deploys the
MiniLM pipeline and sends it the same arrivals, and writes the comparison
table (seed-003 columns, TTFT next to the encoder's) with the compare
harness's own writer.  Results: ``--out`` (JSON with a ``RunResult`` summary,
seed-003 CSV).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import openloop, streamload
from benchmark.results import RunResult, summarize

REPO = Path(__file__).resolve().parents[2]
TEXT = ("Serverless platforms scale functions with the load. A large model is cut into stages "
        "that run as a pipeline, and bursts travel down the pipeline from stage to stage. ")


def prompt(i: int, chars: int) -> str:
    start = (i * 17) % len(TEXT)
    return ((TEXT * (chars // len(TEXT) + 2))[start:start + chars]).strip() or "Hello"


def pct(xs: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(xs, q)) if len(xs) else math.nan


def row(name: str, xs_s: list[float]) -> str:
    ms = np.asarray(xs_s) * 1e3
    if not len(ms):
        return f"  {name:<28} (no data)"
    return (f"  {name:<28} avg {ms.mean():8.1f}  p50 {pct(ms, 50):8.1f}  p95 {pct(ms, 95):8.1f}"
            f"  p99 {pct(ms, 99):8.1f}  ms")


# ------------------------------------------------------------------ in-process baselines

def baselines(model_dir: Path, text: str, new_tokens: int) -> dict[str, float]:
    """The unpartitioned model in this process (1 thread): prefill, per-token with the KV
    cache, and per-token recomputing the whole prefix at the same final length."""
    from functions.stage.opt import DecoderMonolith, KVCache

    mono = DecoderMonolith(model_dir)
    tok = mono.stages[0].tokenizer
    assert tok is not None
    ids = tok.encode(text)
    mono.generate(text, 2)  # warm
    t0 = time.perf_counter()
    out = mono.generate(text, new_tokens)
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    mono.generate(text, 1)
    prefill = time.perf_counter() - t0
    full = torch.tensor([ids + out[:-1]])
    t0 = time.perf_counter()
    for _ in range(3):
        h = full
        for s in mono.stages:
            h = s.forward(h, 0, KVCache())
        mono.stages[-1].next_token(h)
    recompute = (time.perf_counter() - t0) / 3
    per_token = (total - prefill) / max(1, len(out) - 1)
    return {"prompt_tokens": len(ids), "prefill_ms": prefill * 1e3,
            "per_token_kv_ms": per_token * 1e3, "per_token_recompute_ms": recompute * 1e3,
            "positions_at_end": int(full.shape[1])}


# ------------------------------------------------------------------ deployment

def ensure_partition(model: str, out: Path, stages: int, say=print) -> Path:
    if not (out / "manifest.json").is_file():
        from functions.partitioner import partition

        say(f"partitioning {model} into {stages} stages -> {out}")
        partition(out, stages, model=model)
    return out


def deploy_local(model: str, encoder: bool, state: Path, say=print) -> tuple[str, Path]:
    from local_provider import deploy, services

    mdir = ensure_partition(
        model, REPO / ".quart" / "models" / f"{model.removesuffix('-seeded')}-2", 2, say)
    os.environ["QUART_OPT_MODEL_DIR"] = str(mdir)
    os.environ["QUART_OPT_MODEL"] = model
    if encoder:
        mini = os.environ.setdefault("QUART_MODEL_DIR", str(REPO / ".quart/models/minilm-3"))
        ensure_partition("all-MiniLM-L6-v2", Path(mini), 3, say)
    gw, pv, mp, kp = (services.free_port() for _ in range(4))
    gateway = f"http://127.0.0.1:{gw}"
    os.environ["QUART_GATEWAY_URL"] = gateway
    t0 = time.perf_counter()
    deploy.up(str(REPO / "stack.yml"), gateway, state, "", say=lambda s: None,
              provider_port=pv, metrics_port=mp, keys_metrics_port=kp,
              pipeline="all" if encoder else "opt")
    say(f"deployed the {'opt and minilm pipelines' if encoder else 'opt pipeline'} on "
        f"{gateway} in {time.perf_counter() - t0:.1f}s")
    return gateway, mdir


# ------------------------------------------------------------------ report

def decoder_result(res: list[streamload.StreamResult], offsets: np.ndarray, workload: dict,
                   slo_s: float) -> RunResult:
    ok = np.array([r.ok for r in res])
    return RunResult(system="quart-opt (decoder)", mode="live", workload=workload, slo_s=slo_s,
                     arrival_s=offsets, latency_s=np.array([r.latency_s for r in res]),
                     ok=ok, ttft_s=np.array([r.ttft_s if r.ok else math.nan for r in res]))


def per_token(res: list[streamload.StreamResult]) -> dict[str, Any]:
    good = [r for r in res if r.ok]
    gaps = [g for r in good for g in r.gaps_s]
    tpot = [(r.latency_s - r.ttft_s) / (r.tokens - 1) for r in good if r.tokens > 1]
    stages = sorted({k for r in good for d in r.stage_ms for k in d})
    step = {k: statistics.fmean([d.get(k, 0.0) for r in good for d in r.stage_ms[1:]] or [0.0])
            for k in stages}
    prefill = {k: statistics.fmean([r.stage_ms[0].get(k, 0.0) for r in good if r.stage_ms]
                                   or [0.0]) for k in stages}
    tokens = sum(r.tokens for r in good)
    return {"gaps_s": gaps, "tpot_s": tpot, "tokens": tokens, "stage_step_ms": step,
            "stage_prefill_ms": prefill}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", help="use this gateway (opt pipeline already deployed)")
    p.add_argument("--function", default="opt-stage-0")
    p.add_argument("--model", default="opt-125m-seeded", help="opt-125m-seeded | opt-tiny-seeded")
    p.add_argument("--model-dir", type=Path, help="the partition, for the in-process baseline "
                                                  "(with --gateway)")
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--rate", type=float, default=0.5, help="mean requests per second")
    p.add_argument("--cv", type=float, default=2.0, help="CV of the inter-arrival times")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--prompt-chars", type=int, default=64)
    p.add_argument("--slo-s", type=float, default=10.0, help="end-to-end SLO for attainment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", action="store_true",
                   help="also run the MiniLM pipeline on the same arrivals (table side by side)")
    p.add_argument("--out", type=Path, default=REPO / ".quart" / "bench")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    state = Path(tempfile.mkdtemp(prefix="quart-decoder-bench-"))
    deployed = a.gateway is None
    try:
        if deployed:
            gateway, mdir = deploy_local(a.model, a.encoder, state)
        else:
            gateway, mdir = a.gateway.rstrip("/"), a.model_dir
        return _run(a, gateway, mdir)
    finally:
        if deployed:
            from local_provider import deploy

            deploy.down(state, say=lambda s: None)


def _run(a: argparse.Namespace, gateway: str, mdir: Path | None) -> int:
    url = f"{gateway}/function/{a.function}"

    def body(i: int) -> bytes:
        return json.dumps({"prompt": prompt(i, a.prompt_chars),
                           "max_new_tokens": a.max_new_tokens}).encode()

    base = baselines(mdir, prompt(0, a.prompt_chars), a.max_new_tokens) if mdir else None
    for i in range(2):  # warm-up, not counted
        streamload.stream_one(streamload.requests.Session(), url, body(i), time.perf_counter())
    offsets = openloop.gamma_arrivals(a.rate, a.cv, a.requests, a.seed)
    sha = hashlib.sha256(np.asarray(offsets, dtype=np.float64).tobytes()).hexdigest()
    workload = {"name": "decoder-openloop", "rps": a.rate, "cv": a.cv, "seed": a.seed,
                "requests": a.requests, "duration_s": float(offsets[-1]), "sha256": sha,
                "max_new_tokens": a.max_new_tokens, "prompt_chars": a.prompt_chars}
    print(f"sending {a.requests} streamed generations open-loop to {url}: mean {a.rate:g}/s, "
          f"CV {a.cv:g}, {a.max_new_tokens} new tokens, prompts of {a.prompt_chars} characters "
          f"(load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    t0 = time.perf_counter()
    res, wall = streamload.run(url, body, offsets)
    elapsed = time.perf_counter() - t0
    dec = decoder_result(res, offsets, workload, a.slo_s)
    dec.start_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(wall))
    dec.end_time = time.strftime("%Y-%m-%dT%H:%M:%S")
    pt = per_token(res)
    workload["loadavg_after"] = os.getloadavg()[0]
    good = [r for r in res if r.ok]
    print(f"\n{len(good)}/{len(res)} ok, {pt['tokens']} tokens in {elapsed:.1f}s "
          f"({pt['tokens'] / elapsed:.1f} tokens/s); failures: "
          f"{sorted({r.error or r.status for r in res if not r.ok}) or 'none'}")
    print(row("TTFT", [r.ttft_s for r in good]))
    print(row("per-token (inter-token gap)", pt["gaps_s"]))
    print(row("time per output token", pt["tpot_s"]))
    print(row("end to end", [r.latency_s for r in good]))
    step_sum = sum(pt["stage_step_ms"].values())
    print("  stage compute per token (Server-Timing): " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in pt["stage_step_ms"].items()) + "; prefill: " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in pt["stage_prefill_ms"].items()))
    gap = statistics.fmean(pt["gaps_s"]) * 1e3 if pt["gaps_s"] else math.nan
    if step_sum:
        print(f"  mean inter-token gap / stage compute per token: {gap / step_sum:.2f}")
    extra: dict[str, Any] = {"per_token": {k: pt[k] for k in ("tokens", "stage_step_ms",
                                                               "stage_prefill_ms")}}
    for name, xs in (("gap", pt["gaps_s"]), ("tpot", pt["tpot_s"])):
        extra["per_token"].update({f"avg_{name}_ms": statistics.fmean(xs) * 1e3 if xs else None,
                                   f"p50_{name}_ms": pct(xs, 50) * 1e3,
                                   f"p95_{name}_ms": pct(xs, 95) * 1e3,
                                   f"p99_{name}_ms": pct(xs, 99) * 1e3})
    if base:
        _print_baseline(base, good, gap)
        extra["baseline"] = base
    dec.extra = extra
    results = [dec]
    if a.encoder:
        results.append(_encoder_run(a, gateway, workload, offsets))
    _write(a, results)
    return 0 if len(good) == len(res) else 1


def _print_baseline(base: dict[str, Any], good: list[Any], gap: float) -> None:
    """The pipeline against the unpartitioned model in-process (same weights, same prompt)."""
    ttft50 = pct([r.ttft_s for r in good], 50) * 1e3
    print(f"\nin-process unpartitioned model, same weights and prompt ({base['prompt_tokens']} "
          f"tokens), 1 thread, no load:")
    print(f"  prefill {base['prefill_ms']:.1f} ms -> pipeline TTFT p50 / prefill = "
          f"{ttft50 / base['prefill_ms']:.2f}")
    print(f"  per token {base['per_token_kv_ms']:.1f} ms -> pipeline mean gap / per token = "
          f"{gap / base['per_token_kv_ms']:.2f}")
    print(f"  one token at {base['positions_at_end']} positions: KV cache "
          f"{base['per_token_kv_ms']:.1f} ms vs recomputing the prefix "
          f"{base['per_token_recompute_ms']:.1f} ms "
          f"({base['per_token_recompute_ms'] / base['per_token_kv_ms']:.1f}x)")


def _encoder_run(a: argparse.Namespace, gateway: str, workload: dict[str, Any],
                 offsets: Any) -> RunResult:
    """The MiniLM encoder pipeline on the same arrivals, for comparison."""
    enc_body = json.dumps({"inputs": [prompt(0, a.prompt_chars)]}).encode()
    enc_url = f"{gateway}/function/minilm-stage-0"
    for _ in range(2):
        openloop.run(enc_url, enc_body, np.zeros(1))
    e0 = time.time()
    er = openloop.run(enc_url, enc_body, offsets)
    enc = RunResult(system="quart-minilm (encoder)", mode="live", workload=workload,
                    slo_s=a.slo_s, arrival_s=offsets,
                    latency_s=np.array([r.latency_s for r in er]),
                    ok=np.array([r.status == 200 for r in er]))
    enc.start_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e0))
    enc.end_time = time.strftime("%Y-%m-%dT%H:%M:%S")
    return enc


def _write(a: argparse.Namespace, results: list[RunResult]) -> None:
    from benchmark.report import files as report_files
    from benchmark.report.table import comparison_rows, render_plain

    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summaries = [summarize(r, "decoder") for r in results]
    doc = {"command": vars(a) | {"out": str(a.out), "model_dir": str(a.model_dir or "")},
           "runs": [{"summary": s, "extra": r.extra, "arrival_s": r.arrival_s,
                     "ttft_s": r.ttft_s, "latency_s": r.latency_s, "ok": r.ok}
                    for s, r in zip(summaries, results)]}
    path = a.out / f"decoder_{stamp}.json"
    path.write_text(json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    for s in summaries:
        report_files.write_summary_csv(
            s, report_files.csv_path(a.out, "decoder", s["scheduler_type"], stamp))
    print()
    title = ("decoder next to encoder (different models and answers: read the rows, not the "
             "Winner column)" if len(results) > 1 else "decoder")
    print(render_plain(comparison_rows(summaries), [r.system for r in results], title), end="")
    print(f"wrote {path} and the comparison CSV(s) beside it")


if __name__ == "__main__":
    raise SystemExit(main())
