"""``quart-faas compare --workload rig``: the emulated-accelerator pipeline, live and simulated.

Why a workload of its own: on this machine's two cores a MiniLM replica adds contention, not
capacity, so a live comparison of autoscalers says nothing (benchmark/RESULTS.md).  The rig's
stages (stack.yml's ``emu`` pipeline, docs/emulated-stage.md) hold an emulated device instead of
computing, so capacity grows with replicas up to the node's device budget, as on a GPU node.

Both modes run the rig as ``python -m benchmark.sim.validate_autoscale`` validated it (every
system's P99 and replica-seconds within 25 % of live): the same deployment live (fork for
Quart, a real process start for the baselines), the same model simulated (device times from
the partition's manifest, host costs and spawn times from ``benchmark/sim/rig_calibration.json``),
and the same clocks: the local deploy's Prometheus scrapes every second and the live plugin
decides every ``LiveConfig.quart_period_s``; ``--scrape-interval`` and ``--control-period``
change them in the simulator only.  Defaults that differ from the MiniLM workload's, because
the rig's stages take ~100 ms of device time each: an SLO of 1 s and at most 5 replicas per
stage in both modes (the stack's cap, so that live and simulated bound alike).
``--devices 32 --max-replicas 8`` is the rig with room to scale: a device for every replica
the cap allows, so each stage is bounded by its cap, not by a device budget shared with the
others; live, the cap reaches the plugin as the stages' ``com.openfaas.scale.max``
(``benchmark/live/run.py``).  ``static`` is sized from the profiled device times
(``profiled_service_s``) and the workload's mean rate, in both modes.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.clocks import Clocks, from_args
from benchmark.systems.base import Bounds

if TYPE_CHECKING:  # the rig's modules load the provider and the simulator: only when used
    from benchmark.live.run import LiveConfig

TARGET = "emu"  # benchmark.sim.rigpipe.PIPELINE, stack.yml's pipeline
SLO_S = 1.0
MAX_REPLICAS = 5
SCRAPE_S = 1.0  # local_provider/deploy.py's Prometheus
INPUTS = 4  # sentences per request, as the validation sent
NICE = -20  # the deployment above other work on the machine, as the validation ran it


def devices(a: argparse.Namespace) -> int:
    """The node's emulated devices: ``--devices`` or the stack's ``QUART_EMU_DEVICES``."""
    from benchmark.sim import rigpipe

    return rigpipe.DEVICES if getattr(a, "devices", None) is None else int(a.devices)


def clocks(a: argparse.Namespace) -> Clocks:
    """The rig's clocks: the deployment's 1 s scrape unless ``--scrape-interval`` says
    otherwise; Quart's period is ``options``' business."""
    given = from_args(a)  # checks the flags (and refuses them live)
    return Clocks(SCRAPE_S if a.scrape_interval is None else given.scrape_s,
                  given.quart_period_s)


def options(a: argparse.Namespace, system: str) -> dict[str, Any]:
    """A simulated system's build options.  Quart runs as the live plugin does
    (``benchmark/live/run.py``): ``QUART_CONTROL_PERIOD_S`` of ``LiveConfig.quart_period_s``
    and the plugin's other settings at their defaults, counted in periods (scale-down after
    3, a retraining every 12), as ``validate_autoscale`` built it.  ``--control-period``
    instead keeps those waits in seconds, as everywhere else (``benchmark/clocks.py``)."""
    from benchmark.live.run import LiveConfig

    if system.startswith("quart") and a.clocks.quart_period_s is None:
        return {"period_s": LiveConfig.quart_period_s}
    return a.clocks.options(system)


def describe(a: argparse.Namespace) -> str:
    from benchmark.live.run import LiveConfig

    period = (f"{LiveConfig.quart_period_s:g} (the live plugin's)"
              if a.clocks.quart_period_s is None else f"{a.clocks.quart_period_s:g}")
    return (f"rig: {devices(a)} emulated devices on the node\n"
            f"clocks (rig): Prometheus scrape {a.clocks.scrape_s:g} s; quart period {period} s; "
            "openfaas-pro-* every 5 s; knative-kpa 2 s and ray-serve 1 s on their own meters")


def sim_parts(a: argparse.Namespace, bounds: Bounds) -> tuple[list[Any], Any, Any]:
    """Pipelines, cluster and configuration of a simulated rig run."""
    from benchmark.sim import rigpipe
    from benchmark.sim.rig import RigHost, rig_cluster, rig_config, rig_pipeline

    rigpipe.ensure_partition(rigpipe.MODEL_DIR, say=lambda s: None)
    pipe = rig_pipeline(rigpipe.MODEL_DIR, tuple(rigpipe.texts(INPUTS)), rigpipe.TIME_SCALE,
                        RigHost.load(), replicas=bounds.min_replicas, slo_s=a.slo)
    return ([pipe], rig_cluster(devices(a)),
            rig_config(scrape_s=a.clocks.scrape_s, max_replicas=bounds.max_replicas))


def profiled_service_s() -> dict[str, float]:
    """Each stage's mean device time for the rig's request, as a profile taken before the
    run knows it (the partition's manifest and the calibrated hold beyond the draw): what
    ``static`` is sized from, in both modes.

    Why not the run's own first observations, as ``static`` does without it: its M/M/c
    count sits on a knife edge here (at 16 rps and a 250 ms budget per stage, 3 replicas
    above ~97 ms of service, 2 below), and a mean of the first few seconds' draws fell on
    either side by the seed: one simulated seed in three sized stage 0 at 2 and took
    13.5 s of P99 where the others took 9.7 s.  A profile gives live and simulated runs the
    same plan, so their comparison measures the model, not a coin."""
    from benchmark.sim import rigpipe
    from benchmark.sim.rig import RigHost, rig_pipeline

    rigpipe.ensure_partition(rigpipe.MODEL_DIR, say=lambda s: None)
    pipe = rig_pipeline(rigpipe.MODEL_DIR, tuple(rigpipe.texts(INPUTS)), rigpipe.TIME_SCALE,
                        RigHost.load())
    return {s.name: s.service_mean_s for s in pipe.stages}


def live_config(a: argparse.Namespace, bounds: Bounds, state: Path) -> LiveConfig:
    """The rig deployed from stack.yml on free ports, its knobs in the deployment's env."""
    from benchmark.live.run import LiveConfig
    from benchmark.sim import rigpipe

    env = rigpipe.rig_env(rigpipe.TIME_SCALE, devices(a))
    env.pop("QUART_LAUNCHER")  # run_live picks it from the system's scale-up (fork or process)
    assert rigpipe.PIPELINE == TARGET
    return LiveConfig(stack_file=str(rigpipe.STACK), pipeline=TARGET, state_dir=state,
                      slo_s=a.slo, bounds=bounds, inputs=INPUTS, nice=NICE, extra_env=env,
                      timeout_s=120.0)


def ensure_partition(say: Any) -> None:
    from benchmark.sim import rigpipe

    rigpipe.ensure_partition(rigpipe.MODEL_DIR, say)
