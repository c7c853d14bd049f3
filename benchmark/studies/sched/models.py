"""What a model costs a node: memory, cold load, warm serve (and, for a decoder, TTFT).

The scheduler comparison is only as good as these numbers, so the encoder
figures are the ones this repository measured, not guesses
(``quart-faas bench scaleup``, README "scale-up" table, 20 trials per tier,
1 torch thread):

==========================  ==========  =================  ==========
stage                       T1 size     cold ready (p50)   warm call
==========================  ==========  =================  ==========
MiniLM stage 2/3            13.5 MiB    2546 ms            14.2 ms
BERT-large stage 3/4        288 MiB     2851 ms            152.1 ms
==========================  ==========  =================  ==========

"Cold" is a fresh process importing torch and loading the weights, which is
what a node pays when the scheduler chooses COLD_START.  A decoder request
has a time to first token (queue + load + prefill) and then one step per
generated token (Pope et al., *Efficiently Scaling Transformer Inference*,
2022, split latency the same way); the decoder entry is measured by
``quart-faas bench sched_calibrate`` on this machine (see that module).

Per-request service times vary around the mean by a log-normal factor with a
mean of 1 (sigma 0.1 for a serve, 0.05 for a load): a few percent of jitter is
what the scale-up benchmark's p50/p95 spread shows for warm calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = ["CATALOGUE", "MiB", "ModelSpec", "resolve_models"]

MiB = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """One servable model (or pipeline stage) as the scheduler sees it."""

    name: str
    size_mib: float
    load_s: float                 # cold start: fresh process + weights
    serve_s: float = 0.0          # encoder: one warm call
    kind: str = "encoder"         # "encoder" | "decoder"
    prefill_s: float = 0.0        # decoder: prompt pass, ends at the first token
    per_token_s: float = 0.0      # decoder: one decode step
    tokens: int = 0               # decoder: mean generated tokens per request

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model needs a name")
        for field in ("size_mib", "load_s"):
            v = getattr(self, field)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"model {self.name!r}: {field} must be > 0, got {v!r}")
        if self.kind == "encoder":
            if not (math.isfinite(self.serve_s) and self.serve_s > 0):
                raise ValueError(f"model {self.name!r}: an encoder needs serve_s > 0")
        elif self.kind == "decoder":
            if not (self.prefill_s > 0 and self.per_token_s > 0 and self.tokens >= 1):
                raise ValueError(f"model {self.name!r}: a decoder needs prefill_s > 0, "
                                 "per_token_s > 0 and tokens >= 1")
        else:
            raise ValueError(f"model {self.name!r}: kind must be 'encoder' or 'decoder', "
                             f"got {self.kind!r}")

    @property
    def mean_serve_s(self) -> float:
        """Expected warm service time, what schedulers use to estimate backlogs."""
        if self.kind == "decoder":
            return self.prefill_s + self.tokens * self.per_token_s
        return self.serve_s

    def service(self, factor: float, tokens: int) -> tuple[float, float]:
        """(seconds to the first token, seconds in total) of one warm request."""
        if self.kind == "decoder":
            first = self.prefill_s * factor
            return first, first + tokens * self.per_token_s * factor
        s = self.serve_s * factor
        return s, s


# Measured figures: see the module docstring.  The decoder row is a synthetic
# OPT-125m (facebook/opt-125m's config, seeded weights, fp32) on this machine's CPU
# with 1 torch thread, a 64-token prompt, 32 generated tokens, medians of 5 trials
# (`quart-faas bench sched_calibrate --trials 5`, measured while other jobs shared the
# 2 cores: cold load 7.31 s — transformers' import is most of it —, prefill 0.500 s,
# 93.3 ms per token).
CATALOGUE: dict[str, ModelSpec] = {
    "minilm-stage": ModelSpec("minilm-stage", size_mib=13.5, load_s=2.546, serve_s=0.0142),
    "bert-large-stage": ModelSpec("bert-large-stage", size_mib=288.0, load_s=2.851,
                                  serve_s=0.1521),
    "opt-125m": ModelSpec("opt-125m", size_mib=477.8, load_s=7.31, kind="decoder",
                          prefill_s=0.500, per_token_s=0.0933, tokens=32),
}


def resolve_models(targets: Sequence[str],
                   models: Sequence[ModelSpec] | Mapping[str, ModelSpec] | None
                   ) -> list[ModelSpec]:
    """One spec per workload target, named after the target.

    ``models`` may be a mapping target -> spec, a sequence aligned with the
    targets, or None: then a target named like a catalogue entry (or with such
    a name as prefix, ``bert-large-stage-2``) takes that entry and any other
    target takes the catalogue's encoder entries in turn (MiniLM, BERT-large,
    ...), so that any workload runs and the choice is written in the result.
    """
    if not targets:
        raise ValueError("the workload has no targets")
    if models is None:
        encoders = [m for m in CATALOGUE.values() if m.kind == "encoder"]
        out = []
        unknown = 0
        for t in targets:
            base = next((m for k, m in CATALOGUE.items() if t == k or t.startswith(k + "-")),
                        None)
            if base is None:
                base = encoders[unknown % len(encoders)]
                unknown += 1
            out.append(replace(base, name=t))
        return out
    if isinstance(models, Mapping):
        missing = [t for t in targets if t not in models]
        if missing:
            raise ValueError(f"models has no spec for targets {missing[:5]}")
        specs = [models[t] for t in targets]
    else:
        specs = list(models)
        if len(specs) != len(targets):
            raise ValueError(f"{len(specs)} model specs for {len(targets)} targets; pass one "
                             "per target, in the workload's target order, or a mapping")
    for s in specs:
        if not isinstance(s, ModelSpec):
            raise TypeError(f"models must hold ModelSpec, got {type(s).__name__}")
    return [replace(s, name=t) for s, t in zip(specs, targets, strict=True)]
