"""The live rig for calibration and validation: stack.yml's ``emu`` pipeline, deployed,
called and torn down.

The same functions ``quart-faas up -f stack.yml --pipeline emu`` deploys (four
``emu-stage-K`` stages of BERT-large on emulated accelerators, docs/emulated-stage.md),
through ``local_provider.deploy.up`` on free ports with a private state directory, so
nothing of a running demo is touched.  The stack reads its knobs from the environment
(``QUART_EMU_TIME_SCALE``, ``QUART_EMU_DEVICES``, ``QUART_ACCELERATOR``), set here for
the deployment only; ``QUART_LAUNCHER`` picks fork (keys_manager T0) or a fresh process
for new replicas.  Requests carry ``benchmark.live.run.SENTENCES`` (4 sentences by
default), the body ``benchmark.live`` sends, so validation and the autoscaling runs
share one request shape.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmark.live.run import SENTENCES
from local_provider import deploy, services

from .livepipe import LivePipeline

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack.yml"
PIPELINE = "emu"
STAGES = 4
MODEL_DIR = REPO / ".quart" / "models" / "emu-bert-large-4"  # stack.yml's default
TIME_SCALE = 50.0
DEVICES = 16


def ensure_partition(model_dir: Path = MODEL_DIR, say: Callable[[str], None] = print) -> Path:
    """The emulated partition stack.yml points at, cut if missing (weightless: ~1 s)."""
    if not (model_dir / "manifest.json").is_file():
        from functions.partitioner import partition

        say(f"partitioning emulated:bert-large into {STAGES} stages at {model_dir}")
        partition(model_dir, STAGES, model="emulated:bert-large")
    return model_dir


def texts(inputs: int = 4) -> list[str]:
    return (SENTENCES * (inputs // len(SENTENCES) + 1))[:inputs]


def body(inputs: int = 4) -> bytes:
    return json.dumps({"inputs": texts(inputs)}).encode()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (the stack and the provider read them) and restore."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rig_env(time_scale: float, devices: int, launcher: str = "fork",
            model_dir: Path = MODEL_DIR, accelerator: str = "") -> dict[str, str]:
    env = {"QUART_EMU_TIME_SCALE": f"{time_scale:g}", "QUART_EMU_DEVICES": str(devices),
           "QUART_EMU_MODEL_DIR": str(model_dir), "QUART_LAUNCHER": launcher}
    if accelerator:
        env["QUART_ACCELERATOR"] = accelerator
    return env


@contextlib.contextmanager
def deployed(time_scale: float = TIME_SCALE, devices: int = DEVICES, launcher: str = "fork",
             model_dir: Path = MODEL_DIR, accelerator: str = "",
             say: Callable[[str], None] = print) -> Iterator[LivePipeline]:
    """The emu pipeline up (no Prometheus: nothing scales), one replica per stage."""
    ensure_partition(model_dir, say)
    tmp = Path(tempfile.mkdtemp(prefix="quart-rig-"))
    state = tmp / "state"
    gw, pv, mp, kp = (services.free_port() for _ in range(4))
    gateway = f"http://127.0.0.1:{gw}"
    env = {**rig_env(time_scale, devices, launcher, model_dir, accelerator),
           "QUART_GATEWAY_URL": gateway}
    try:
        with environment(env):
            deploy.up(str(STACK), gateway, state, "", say=lambda s: None, provider_port=pv,
                      metrics_port=mp, keys_metrics_port=kp, pipeline=PIPELINE)
            auth = (deploy.USER, deploy.password_file(state).read_text().strip())
            yield LivePipeline(gateway, auth, tuple(f"{PIPELINE}-stage-{i}"
                                                    for i in range(STAGES)), model_dir, state)
    finally:
        deploy.down(state, say=lambda s: None)
        shutil.rmtree(tmp, ignore_errors=True)
