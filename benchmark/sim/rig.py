"""The rig in the simulator: stack.yml's ``emu`` pipeline as a ``PipelineSpec``.

Two sources, one truth each:

- **Device times** come from the partition's manifest through the very code the stage
  runs (``functions.stage.emulated_profile.ServiceModel.from_manifest``: the
  calibration of ``functions/emulated_calibration.json`` copied into the manifest,
  the accelerator profile, the time scale): the mean for the request's shape (batch x
  tokens, from stage 0's own tokenizer) and the stage's gamma CV.  Change the
  calibration, the profile or the scale and the rig and the simulator move together.
- **Host overheads** (the embedded gateway's CPU per hop, each replica's own CPU per
  request, the delay a hop adds beyond CPU, the client's CPU, spawn times of forked
  and cold replicas) come from ``rig_calibration.json``, measured on this machine by
  ``python -m benchmark.sim.calibrate --rig`` (``calibrate_rig``).

The node is this machine: ``os.cpu_count()`` cores shared by the gateway, the
replicas and (optionally) other programs' runnable threads, ``QUART_EMU_DEVICES``
devices, Prometheus scraping every second and the timeline sampled every second (the
local deploy and ``benchmark.live``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .calibration import RIG_CALIBRATION, SpawnProfile, rig_spawn
from .spec import ClusterSpec, PipelineSpec, SimConfig, StageSpec

__all__ = ["RIG_CALIBRATION", "RigHost", "rig_cluster", "rig_config", "rig_pipeline",
           "service_means"]

MIB = 1 / 1024
# A replica of the emulated stage is a process that imported torch and the stage (no
# weights): the fresh process's RSS; a fork adds its own pages only (estimates: the
# machine's memory is never what binds the rig).
PROCESS_GIB = 0.35
FORK_GIB = 8 * MIB


@dataclass(frozen=True)
class RigHost:
    """Host-side costs per request (seconds) and spawn times, measured on the rig."""

    hop_cpu_s: float  # the gateway's CPU per hop (its whole CPU per request / stages)
    host_cpu_s: tuple[float, ...]  # each stage's replica CPU per request
    hop_s: float  # delay per hop that CPU does not explain (loopback, waits)
    client_cpu_s: float  # the load generator's CPU per request (a delay before stage 0)
    spawn: SpawnProfile
    source: str
    device_extra_s: tuple[float, ...] = ()  # device held beyond the draw, per stage
    handoff_s: tuple[float, ...] = ()  # back-to-back hand-over per stage (saturated)
    late: tuple[tuple[float, tuple[float, ...]], ...] = ()  # (share, extra s) per stage

    @classmethod
    def load(cls, path: Path = RIG_CALIBRATION) -> RigHost:
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"no rig calibration at {path} ({e}): run python -m "
                                    "benchmark.sim.calibrate --rig") from None
        spawn = rig_spawn(path)
        if spawn is None:
            raise ValueError(f"{path} has no spawn section: recalibrate")
        return cls(d["hop_cpu_s"], tuple(d["replica_cpu_s"]), d["hop_s"], d["client_cpu_s"],
                   spawn, f"{d['command']} ({d['measured_at']})",
                   tuple(d.get("device_extra_s", ())), tuple(d.get("handoff_s", ())),
                   tuple((w["p"], tuple(w["extra_s"])) for w in d.get("late_wakes", ())))


@lru_cache(maxsize=8)
def _manifest(model_dir: str) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "manifest.json").read_text())


def request_shape(model_dir: Path, texts: tuple[str, ...]) -> tuple[int, int]:
    """(batch, tokens) stage 0 makes of ``texts``: its own tokenizer, padded to the longest."""
    from functions.stage.bert import Stage

    _ids, mask = Stage(_manifest(str(model_dir)), 0, {}, model_dir).tokenize(list(texts))
    return int(mask.shape[0]), int(mask.shape[1])


def service_means(model_dir: Path, texts: tuple[str, ...], time_scale: float,
                  accelerator: str = "") -> list[tuple[float, float]]:
    """Per stage (mean seconds, CV) of the device time for ``texts``, as the stage draws it."""
    from functions.stage.bert import BertConfig
    from functions.stage.emulated_profile import ServiceModel

    m = _manifest(str(model_dir))
    cfg = BertConfig.from_dict(m["config"])
    b, t = request_shape(model_dir, texts)
    out = []
    for k in range(int(m["num_stages"])):
        sm = ServiceModel.from_manifest(m, k, cfg, accelerator, time_scale)
        out.append((sm.mean_s(cfg, b, t), sm.cv))
    return out


def rig_pipeline(model_dir: Path, texts: tuple[str, ...], time_scale: float,
                 host: RigHost, replicas: int = 1, slo_s: float = 10.0, name: str = "emu",
                 accelerator: str = "") -> PipelineSpec:
    """The ``emu`` pipeline of stack.yml (``max_inflight`` 8, 1 torch thread)."""
    means = service_means(model_dir, texts, time_scale, accelerator)
    if len(host.host_cpu_s) != len(means):
        raise ValueError(f"the rig calibration has {len(host.host_cpu_s)} stages, the "
                         f"partition {len(means)}: recalibrate")
    extra = host.device_extra_s or (0.0,) * len(means)
    handoff = host.handoff_s or (0.0,) * len(means)
    late = host.late or ((0.0, ()),) * len(means)
    # the extra is a constant on top of the draw: same spread, so the CV shrinks
    means = [(m + max(0.0, x), cv * m / (m + max(0.0, x)))
             for (m, cv), x in zip(means, extra, strict=True)]
    return PipelineSpec(name, tuple(
        StageSpec(f"{name}-stage-{k}", mean, cv, "gamma" if cv > 0 else "deterministic",
                  memory_gib=PROCESS_GIB, fork_overhead_gib=FORK_GIB, cpu=None,
                  replicas=replicas, hop_s=host.hop_s + (host.client_cpu_s if k == 0 else 0.0),
                  hop_cpu_s=host.hop_cpu_s, spawn="emulated", device=True,
                  host_cpu_s=host.host_cpu_s[k], handoff_s=handoff[k],
                  late_p=late[k][0] if late[k][1] else 0.0, late_s=late[k][1])
        for k, (mean, cv) in enumerate(means)), slo_s)


def rig_cluster(devices: int = 16, cores: float | None = None,
                background: float | tuple[tuple[float, float], ...] = 0.0,
                memory_gib: float = 16.0) -> ClusterSpec:
    """This machine as one node: its cores, ``devices`` emulated devices."""
    return ClusterSpec.uniform(1, memory_gib, float(cores or os.cpu_count() or 1),
                               background=background, devices=devices)


def rig_config(**overrides: Any) -> SimConfig:
    """The local deploy's metrics (1 s scrapes), the gateway on the node, 1 s timeline, and
    the live harness's load generator: ``openloop.WORKERS`` requests outstanding at most."""
    from benchmark.openloop import WORKERS

    return SimConfig(**{"scrape_s": 1.0, "gateway_node": "node-0", "timeline_s": 1.0,
                        "client_slots": WORKERS, **overrides})
