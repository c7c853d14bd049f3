"""An emulated-accelerator stage: a real stage in everything but its forward pass.

Why: on a 2-core host, more replicas of a real stage add CPU contention, not
capacity, so no live autoscaler comparison means anything.  An accelerator is
capacity: each replica drives its own device, and the host CPU only moves
requests.  This stage serves HTTP like ``StageServer`` (it *is* one: parsing,
limits, the codec, forwarding to ``/function/{next}`` through the gateway, the
relay of errors, ``Server-Timing``), takes and sends activations of the real
shapes (BERT-large: float32 [batch, seq, 1024] and the int64 mask), and its
replicas are forked from a zygote by keys_manager like any other.  Only the
forward pass differs: it takes the replica's emulated device (``device.py``,
shared per node within a budget) and sleeps for a service time drawn from the
calibrated distribution (``emulated_profile.py``).  Sleeping uses no CPU, so a
replica's compute does not slow down when the host is busy, e.g. with a cold start.

The values are placeholders (stage 0 looks token ids up in a small seeded table,
later stages pass their input on, the last pools and normalises as the real one
does): shapes, dtypes, sizes and the protocol are real, the numbers are not a model's.

Environment, beside ``config.py``'s (docs/emulated-stage.md has the details):

  QUART_ACCELERATOR     profile: cpu, t4-fp32, t4-fp16, a10-fp32, a10-fp16
                        (default: the partition's ``--accelerator``)
  QUART_EMU_TIME_SCALE  1; multiplies every service time (time dilation)
  QUART_EMU_DEVICES     16; devices per node, shared by every emulated replica of the node
  QUART_EMU_DEVICE_DIR  the node's device locks; default $QUART_NODE_DIR/emulated-devices
                        (keys_manager sets QUART_NODE_DIR), else /dev/shm/quart-emu-<uid>
  QUART_EMU_SEED        the partition's seed; base of each replica's seed (with its
                        function name and HOSTNAME)
  QUART_EMU_LOAD_S      0; an emulated model load, slept by a process that imports the
                        stage (a zygote or a cold process), never by a forked replica
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from .bert import BertConfig, Stage, mean_pool_normalize, read_manifest
from .codec import decode, encode
from .compute import ComputeLock
from .config import StageConfig
from .device import DevicePool
from .emulated_profile import ProfileError, ServiceModel, ServiceTimes, replica_seed
from .next_hop import next_hop
from .server import StageServer, check_manifest

log = logging.getLogger("quart.stage.emulated")
TABLE_ROWS = 1024  # stage 0's placeholder embedding table: 4 MiB at hidden 1024


@dataclass(frozen=True)
class EmulatedConfig:
    accelerator: str
    time_scale: float
    devices: int
    device_dir: str
    seed: int | None
    load_s: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EmulatedConfig:
        e = os.environ if env is None else env

        def num(name: str, default: str, kind: type = float) -> Any:
            raw = (e.get(name) or default).strip()
            try:
                return kind(raw)
            except ValueError:
                raise SystemExit(f"{name}={raw!r} is not a valid {kind.__name__}") from None

        node = (e.get("QUART_NODE_DIR") or "").strip()
        default_dir = (str(Path(node) / "emulated-devices") if node
                       else f"/dev/shm/quart-emu-{os.getuid()}")
        seed = (e.get("QUART_EMU_SEED") or "").strip()
        cfg = cls(accelerator=(e.get("QUART_ACCELERATOR") or "").strip(),
                  time_scale=num("QUART_EMU_TIME_SCALE", "1"),
                  devices=num("QUART_EMU_DEVICES", "16", int),
                  device_dir=(e.get("QUART_EMU_DEVICE_DIR") or "").strip() or default_dir,
                  seed=num("QUART_EMU_SEED", "0", int) if seed else None,
                  load_s=num("QUART_EMU_LOAD_S", "0"))
        if cfg.devices < 1 or not cfg.time_scale > 0 or cfg.load_s < 0:
            raise SystemExit("QUART_EMU_DEVICES must be >= 1, QUART_EMU_TIME_SCALE > 0 and "
                             "QUART_EMU_LOAD_S >= 0")
        return cfg


class EmulatedStage(Stage):
    """``bert.Stage`` without weights: same tokenizer, shapes and pooling; the forward
    pass sleeps for a drawn service time.  Call it under ``EmulatedLock``."""

    def __init__(self, manifest: dict[str, Any], index: int, model_dir: Path | None,
                 model: ServiceModel, seed: int, function: str = "") -> None:
        super().__init__(manifest, index, {}, model_dir)
        self.service = model
        self.seed_base, self.function = seed, function
        self._times: ServiceTimes | None = None
        self._pid = 0
        self.last_service_s = 0.0
        if self.is_first:
            g = torch.Generator().manual_seed(seed)
            self.table = torch.randn(TABLE_ROWS, self.cfg.hidden_size, generator=g) * 0.5

    def times(self) -> ServiceTimes:
        """The replica's own seeded draws, made after fork (HOSTNAME is set in the child)."""
        if self._times is None or self._pid != os.getpid():
            name = os.environ.get("HOSTNAME") or f"pid-{os.getpid()}"
            self._times = ServiceTimes(self.service, replica_seed(self.seed_base,
                                                                  self.function, name))
            self._pid = os.getpid()
        return self._times

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, t = attention_mask.shape
        s = self.times().draw(self.cfg, b, t)
        self.last_service_s = s
        deadline = time.monotonic() + s
        with torch.inference_mode():
            h = self.table[x % TABLE_ROWS] if self.is_first else x
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)  # the device is busy: asleep, no CPU
        return h

    def pool(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return mean_pool_normalize(h, attention_mask)


class EmulatedLock:
    """The replica's compute lock, then its device: waiting for either is queueing (the
    stage's ``Server-Timing`` clock starts inside, as for a real stage)."""

    def __init__(self, compute: ComputeLock, device: DevicePool) -> None:
        self.compute, self.device = compute, device

    def __enter__(self) -> EmulatedLock:
        self.compute.__enter__()
        try:
            self.device.acquire()
        except BaseException:
            self.compute.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.device.release()
        finally:
            self.compute.__exit__(exc_type, exc, tb)


class EmulatedServer(StageServer):
    """``StageServer`` over an ``EmulatedStage``: every request path is the real one."""

    stage: EmulatedStage

    def __init__(self, cfg: StageConfig, emu: EmulatedConfig | None = None) -> None:
        self.cfg = cfg
        self.emu = emu or EmulatedConfig.from_env()
        torch.set_num_threads(max(1, cfg.torch_threads))
        manifest = read_manifest(Path(cfg.model_dir))
        if manifest.get("architecture") != "emulated":
            raise SystemExit(f"{cfg.model_dir} holds a {manifest.get('architecture')!r} "
                             "partition, not an emulated one")
        n = manifest["num_stages"]
        if not 0 <= cfg.stage < n:
            raise SystemExit(f"QUART_STAGE={cfg.stage} out of range: {cfg.model_dir} has "
                             f"{n} stages")
        try:
            model = ServiceModel.from_manifest(manifest, cfg.stage,
                                               BertConfig.from_dict(manifest["config"]),
                                               self.emu.accelerator, self.emu.time_scale)
        except ProfileError as e:
            raise SystemExit(f"QUART_ACCELERATOR: {e}") from None
        seed = self.emu.seed if self.emu.seed is not None else int(
            manifest["emulation"].get("seed", 0))
        self.stage = EmulatedStage(manifest, cfg.stage, Path(cfg.model_dir), model, seed,
                                   os.environ.get("QUART_FUNCTION_NAME", ""))
        m = check_manifest(cfg, manifest, self.stage.is_last)
        self.model, self.n = m["model"], n
        self.device = DevicePool(self.emu.device_dir, self.emu.devices)
        self.lock = EmulatedLock(ComputeLock(cfg.torch_threads), self.device)
        self.http = next_hop(cfg)
        if self.emu.load_s > 0:  # a process that imports the stage loads "the model"
            time.sleep(self.emu.load_s)

    def warmup(self) -> None:
        """Build torch's lazy state for the host-side work (codec, pooling) before a
        zygote forks; the device is left alone (a zygote never holds one)."""
        mask = torch.ones(1, 4, dtype=torch.int64)
        h = torch.zeros(1, 4, self.stage.cfg.hidden_size)
        data = encode(h, mask, {"model": self.model, "stage": "0", "stages": str(self.n)})
        decode(data, self.stage.cfg.hidden_size, 1, 4, self.model, 0)
        self.stage.pool(h, mask)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        s = self.stage.service
        d["emulated"] = {"accelerator": s.accelerator, "time_scale": s.time_scale,
                         "cv": s.cv, "devices": self.device.devices,
                         "device_dir": str(self.device.dir),
                         "mean_ms_b1_t128": round(s.mean_s(self.stage.cfg, 1, 128) * 1e3, 3)}
        return d
