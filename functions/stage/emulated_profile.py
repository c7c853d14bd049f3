"""Service times of an emulated accelerator: calibrated mean, gamma spread, seeded draws.

The numbers come from ``functions/emulated_calibration.json`` (written by
``python -m functions.emulated_calibrate``), copied into the partition's manifest by
``quart-faas partition --model emulated:bert-large`` so that a stage needs nothing but
its partition.  For a stage of ``L`` layers and a request of batch ``b`` and sequence
``t`` on accelerator profile ``p``:

    cpu_s  = L * layer_s(layer_flops(b, t))
    mean_s = time_scale * max(cpu_s * ratio_p,  L * layer_params * bytes_p / (memory_GBps_p * 1e9))

``layer_s`` interpolates the measured seconds per layer on this CPU linearly in FLOPs
between the calibrated shapes; below the smallest it holds the first value (reading the
weights dominates small shapes), above the largest it goes on at the least-squares
``gflops_effective``.  ``ratio_p`` = this CPU's measured single-thread GEMM GFLOPS / the
profile's published peak (the assumption: the accelerator reaches the same fraction of
its peak on BERT as this CPU does); the second term is a roofline floor, the time to
read the stage's weights once from device memory at its published bandwidth.
``time_scale`` dilates time (docs/emulated-stage.md: why a 2-core host needs it).
A draw is ``mean_s * Z`` with ``Z ~ Gamma(1/cv^2, cv^2)`` (mean 1, the measured
coefficient of variation), from a ``random.Random`` seeded per replica.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "quart-emulated-calibration/1"
CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "emulated_calibration.json"
T4 = ("NVIDIA T4 Tensor Core GPU datasheet, https://www.nvidia.com/content/dam/en-zz/"
      "Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf: FP32 8.1 TFLOPS, "
      "mixed precision FP16/FP32 65 TFLOPS, GDDR6 320 GB/s")
A10 = ("NVIDIA A10 Tensor Core GPU datasheet, https://www.nvidia.com/content/dam/en-zz/"
       "Solutions/Data-Center/a10/pdf/a10-datasheet.pdf: FP32 31.2 TFLOPS, FP16 Tensor Core "
       "125 TFLOPS dense (250 with sparsity), GDDR6 600 GB/s. AWS's A10G has the same 24 GB "
       "at 600 GB/s; NVIDIA publishes no A10G datasheet, so it is not a profile of its own")
# Published dense peaks; "cpu" is this machine itself (ratio 1, no memory floor).
ACCELERATORS: dict[str, dict[str, Any]] = {
    "cpu": {"peak_tflops": None, "precision": "fp32", "bytes_per_param": 4,
            "memory_GBps": None, "source": "measured here: cpu_gemm (1 thread)"},
    "t4-fp32": {"peak_tflops": 8.1, "precision": "fp32", "bytes_per_param": 4,
                "memory_GBps": 320, "source": T4},
    "t4-fp16": {"peak_tflops": 65.0, "precision": "fp16", "bytes_per_param": 2,
                "memory_GBps": 320, "source": T4},
    "a10-fp32": {"peak_tflops": 31.2, "precision": "fp32", "bytes_per_param": 4,
                 "memory_GBps": 600, "source": A10},
    "a10-fp16": {"peak_tflops": 125.0, "precision": "fp16", "bytes_per_param": 2,
                 "memory_GBps": 600, "source": A10},
}
DEFAULT_ACCELERATOR = "t4-fp32"


def layer_flops(cfg: Any, batch: int, seq: int) -> int:
    """Multiply-adds x 2 of one encoder layer: Q, K, V, O (4 h^2) and the MLP (2 h i) per
    token, plus the two attention products (2 t^2 h per sequence)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    return 2 * batch * seq * (4 * h * h + 2 * h * i) + 4 * batch * seq * seq * h


def layer_params(cfg: Any) -> int:
    """Parameters of one encoder layer (weights, biases, two LayerNorms)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    return 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h


class ProfileError(ValueError):
    """An unknown accelerator profile or a malformed emulation section."""


@dataclass(frozen=True)
class ServiceModel:
    """Mean and spread of one stage's service time on one accelerator profile."""

    accelerator: str
    layers: int
    table: tuple[tuple[float, float], ...]  # (layer FLOPs, seconds per layer), sorted
    gflops_effective: float
    ratio: float
    floor_s: float
    cv: float
    time_scale: float = 1.0

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], index: int, cfg: Any,
                      accelerator: str = "", time_scale: float = 1.0) -> ServiceModel:
        emu = manifest.get("emulation") or {}
        name = accelerator or emu.get("accelerator") or DEFAULT_ACCELERATOR
        profiles = emu.get("accelerators") or {}
        if name not in profiles:
            raise ProfileError(f"unknown accelerator {name!r}; this partition knows "
                               f"{', '.join(sorted(profiles)) or 'none'}")
        if not time_scale > 0:
            raise ProfileError(f"time scale must be > 0, got {time_scale}")
        p, fit = profiles[name], emu["fit"]
        first, last = manifest["stages"][index]["layers"]
        layers = last - first
        floor = 0.0
        if p.get("memory_GBps"):
            floor = layers * layer_params(cfg) * p["bytes_per_param"] / (p["memory_GBps"] * 1e9)
        cv = float(manifest["stages"][index].get("cv", fit["cv"]))
        table = tuple((float(f), float(s)) for f, s in sorted(fit["per_layer_table"]))
        if not table:
            raise ProfileError("the emulation section has an empty per_layer_table")
        return cls(name, layers, table, float(fit["gflops_effective"]), float(p["ratio"]),
                   floor, cv, float(time_scale))

    def layer_s(self, flops: float) -> float:
        """Seconds per layer on the calibration CPU (see the module docstring)."""
        t = self.table
        if flops <= t[0][0]:
            return t[0][1]
        for (f0, s0), (f1, s1) in zip(t, t[1:]):
            if flops <= f1:
                return s0 + (s1 - s0) * (flops - f0) / (f1 - f0)
        return t[-1][1] + (flops - t[-1][0]) / (self.gflops_effective * 1e9)

    def cpu_s(self, cfg: Any, batch: int, seq: int) -> float:
        """This stage's time on the calibration CPU."""
        return self.layers * self.layer_s(layer_flops(cfg, batch, seq))

    def mean_s(self, cfg: Any, batch: int, seq: int) -> float:
        return self.time_scale * max(self.cpu_s(cfg, batch, seq) * self.ratio, self.floor_s)


class ServiceTimes:
    """Seeded draws of one replica: the same seed gives the same sequence of factors."""

    def __init__(self, model: ServiceModel, seed: int) -> None:
        self.model = model
        self.seed = seed
        self._rng = random.Random(seed)

    def factor(self) -> float:
        cv = self.model.cv
        if cv <= 0:
            return 1.0
        k = 1.0 / (cv * cv)
        return self._rng.gammavariate(k, 1.0 / k)

    def draw(self, cfg: Any, batch: int, seq: int) -> float:
        return self.model.mean_s(cfg, batch, seq) * self.factor()


def replica_seed(base: int, function: str, replica: str) -> int:
    """A replica's seed from the deployment's base seed and its own name (HOSTNAME, which
    keys_manager sets to ``function-index`` in each forked child): reproducible per run,
    different per replica."""
    d = hashlib.sha256(f"{base}:{function}:{replica}".encode()).digest()
    return int.from_bytes(d[:8], "little")
