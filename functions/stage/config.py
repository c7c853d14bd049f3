"""Stage configuration, parsed once from the environment (the OpenFaaS way).

| variable              | default                        | meaning                                   |
|-----------------------|--------------------------------|-------------------------------------------|
| QUART_MODEL_DIR       | /var/openfaas/models/minilm    | a `quart-faas partition` output directory |
| QUART_MODEL           | (manifest's model)             | expected model name, checked at start     |
| QUART_STAGE           | 0                              | this function's stage index               |
| QUART_STAGES          | (manifest's stage count)       | expected stage count, checked at start    |
| QUART_NEXT_FUNCTION   | "" (last stage)                | function that runs the next stage         |
| QUART_GATEWAY_URL     | http://gateway.openfaas:8080   | where the next stage is invoked           |
| QUART_MAX_INPUTS      | 64                             | texts per request / batch size            |
| QUART_MAX_INPUT_CHARS | 10000                          | characters per text                       |
| QUART_MAX_BODY_BYTES  | 67108864 (64 MiB)              | request body limit (-> 413)               |
| QUART_FORWARD_TIMEOUT_S | 120                          | timeout of the call to the next stage     |
| QUART_TORCH_THREADS   | 1                              | intra-op threads per replica              |
| QUART_VERIFY_SHA256   | 1                              | check the stage file against the manifest |
| QUART_WEIGHTS_PATH    | "" (the manifest's file)        | a verified copy to map copy-on-write instead (set by keys_manager: its T1 segment) |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageConfig:
    model_dir: str
    model: str
    stage: int
    stages: int | None
    next_function: str
    gateway_url: str
    max_inputs: int
    max_input_chars: int
    max_body_bytes: int
    forward_timeout_s: float
    torch_threads: int
    verify_sha256: bool
    weights_path: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StageConfig:
        e = os.environ if env is None else env

        def num(name: str, default: str, kind=int):
            raw = e.get(name, default) or default
            try:
                return kind(raw)
            except ValueError:
                raise SystemExit(f"{name}={raw!r} is not a valid {kind.__name__}") from None

        stages = e.get("QUART_STAGES", "")
        return cls(
            model_dir=e.get("QUART_MODEL_DIR", "/var/openfaas/models/minilm"),
            model=e.get("QUART_MODEL", ""),
            stage=num("QUART_STAGE", "0"),
            stages=int(stages) if stages.strip() else None,
            next_function=e.get("QUART_NEXT_FUNCTION", "").strip(),
            gateway_url=e.get("QUART_GATEWAY_URL", "http://gateway.openfaas:8080").rstrip("/"),
            max_inputs=num("QUART_MAX_INPUTS", "64"),
            max_input_chars=num("QUART_MAX_INPUT_CHARS", "10000"),
            max_body_bytes=num("QUART_MAX_BODY_BYTES", str(64 << 20)),
            forward_timeout_s=num("QUART_FORWARD_TIMEOUT_S", "120", float),
            torch_threads=num("QUART_TORCH_THREADS", "1"),
            verify_sha256=e.get("QUART_VERIFY_SHA256", "1") not in ("0", "false", "no"),
            weights_path=e.get("QUART_WEIGHTS_PATH", "").strip(),
        )


def require_model(cfg: StageConfig, env: dict[str, str] | None = None) -> None:
    """Refuse to start without a partition, with what to do: a pod that started anyway would
    only answer errors.  On a cluster the partition is not where `quart-faas partition`
    wrote it on the build machine: it has to be baked into the image (or mounted)."""
    e = os.environ if env is None else env
    where = Path(cfg.model_dir)
    if (where / "manifest.json").is_file():
        return
    setting = (f"QUART_MODEL_DIR={cfg.model_dir!r}" if e.get("QUART_MODEL_DIR")
               else f"QUART_MODEL_DIR is unset (default {cfg.model_dir!r})")
    raise SystemExit(
        f"quart stage {cfg.stage}: no partitioned model to serve: {setting} has no "
        f"manifest.json (looked in {where.absolute()}). On a cluster, bake the partition into "
        "the image: `quart-faas partition --model all-MiniLM-L6-v2 --stages 3 --out "
        "functions/stage/models/minilm-3` before `faas-cli up`, and deploy with "
        "QUART_MODEL_DIR=/home/app/function/models/minilm-3 (docs/cluster.md, step 2). "
        "Locally: `quart-faas partition ... --out .quart/models/minilm-3`.")
