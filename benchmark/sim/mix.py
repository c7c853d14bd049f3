"""A multi-pipeline workload: five pipelines at once, depths 2-6, different stage times.

Where the paper's ideas have something to do: CV travels down chains of
different depths and loads (so the smoother has a downstream CV to predict),
and with five pipelines the GAT is validated on whole pipelines held out.

Stage times are *synthetic*, anchored on the measured MiniLM stage
(``calibration.MINILM[0]``: 30.7 ms of CPU per request, CV 0.14): each stage
is that time times the factor below, with MiniLM's CV, hop cost, memory and
spawn profile.  Nothing here is measured for these pipelines; the factors were
chosen once, before any run, to give depths 2-6, stages from 15 to 80 ms and
pipelines from ~75 to ~220 ms of compute.

"Shared" stages: ``embed-stage-0`` and ``qa-stage-0`` run the same model as
``minilm-stage-0`` (factor 1.0, same memory and spawn profile: the same
weights, so the same zygote could fork them).  They are still separate
functions: the simulator (and OpenFaaS) give each pipeline's stage its own
name, queue and replicas; one function serving two chains is not modelled.
"""
from __future__ import annotations

from .calibration import MIB, MINILM, StageTiming
from .spec import PipelineSpec, StageSpec

__all__ = ["MIX", "MIX_SHARE", "mix_pipelines"]

# pipeline -> per-stage factor of MiniLM stage 0's compute time
MIX: dict[str, tuple[float, ...]] = {
    "minilm": (1.0, 1.032, 1.077),           # the measured MiniLM stages themselves
    "embed": (1.0, 1.5),                     # stage 0 shares minilm-stage-0's model
    "rerank": (0.5, 1.3, 2.0, 0.8),
    "qa": (1.0, 1.0, 2.6, 1.6, 0.65),        # stage 0 shares minilm-stage-0's model
    "bert": (1.2, 1.2, 1.2, 1.2, 1.2, 1.2),
}
# each pipeline's share of the total request rate
MIX_SHARE: dict[str, float] = {"minilm": 0.3, "embed": 0.25, "rerank": 0.2, "qa": 0.15,
                               "bert": 0.1}


def mix_pipelines(slo_s: float = 0.5, replicas: int = 1,
                  base: StageTiming | None = None) -> list[PipelineSpec]:
    """The five pipelines of ``MIX`` as simulator specs, all with the SLO ``slo_s``."""
    b = base or (MINILM[0] if MINILM else None)
    if b is None:
        raise ValueError("no MiniLM calibration: run python -m benchmark.sim.calibrate")
    return [PipelineSpec(name, tuple(
        StageSpec(f"{name}-stage-{i}", b.mean_s * f, b.cv, "lognormal", memory_gib=0.42,
                  fork_overhead_gib=11.1 * MIB, cpu=1.0, replicas=replicas, hop_s=b.hop_s,
                  hop_cpu_s=b.hop_cpu_s, spawn="minilm")
        for i, f in enumerate(factors)), slo_s) for name, factors in MIX.items()]
