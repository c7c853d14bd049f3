"""Measure the decoder row of the catalogue: cold load, prefill, per-token time.

Seed 003 served ``facebook/opt-125m``; there is no network for its weights
here, so, as the rest of the benchmark does for large models, the model is
built from its published configuration (OPT-125m: 12 layers, d_model 768,
12 heads, FFN 3072, vocabulary 50272; Zhang et al., *OPT*, 2022, table 1)
with seeded random weights, saved as safetensors, and timed:

* **cold load**: a fresh Python process imports torch + transformers, loads the
  saved model and finishes one forward pass (what COLD_START costs a node);
* **prefill**: one forward pass over a ``--prompt``-token prompt (the TTFT part);
* **per token**: one greedy decode step with the KV cache, averaged over
  ``--tokens`` steps.

Random weights cost the same FLOPs as trained ones, so the times hold.  Runs
with one torch thread, as the scale-up benchmark does.
Usage: ``quart-faas bench sched_calibrate [--trials 5] [--prompt 64] [--tokens 32]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPT_125M: dict[str, Any] = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "ffn_dim": 3072, "vocab_size": 50272, "max_position_embeddings": 2048,
            "word_embed_proj_dim": 768}

_COLD = """
import time, sys
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
from transformers import OPTForCausalLM
m = OPTForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.inference_mode():
    m(torch.ones(1, 8, dtype=torch.long))
print(time.perf_counter() - t0)
"""


def measure(trials: int, prompt: int, tokens: int) -> dict[str, float]:
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(**OPT_125M)).eval()
    size_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / (1 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        cold = [float(subprocess.run([sys.executable, "-c", _COLD, tmp], check=True,
                                     capture_output=True, text=True).stdout.strip())
                for _ in range(trials)]
    ids = torch.randint(2, OPT_125M["vocab_size"], (1, prompt), generator=torch.Generator()
                        .manual_seed(1))
    prefill, step = [], []
    with torch.inference_mode():
        model(ids)  # warm-up
        for _ in range(trials):
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            prefill.append(time.perf_counter() - t0)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(tokens):
                out = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            step.append((time.perf_counter() - t0) / tokens)
    return {"size_mib": round(size_mib, 1), "cold_load_s": statistics.median(cold),
            "prefill_s": statistics.median(prefill), "per_token_s": statistics.median(step),
            "prompt_tokens": prompt, "generated_tokens": tokens, "trials": trials}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quart-faas bench sched_calibrate", description=__doc__
                                .split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    if a.trials < 1 or a.prompt < 1 or a.tokens < 1:
        p.error("--trials, --prompt and --tokens must be >= 1")
    res = measure(a.trials, a.prompt, a.tokens)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
