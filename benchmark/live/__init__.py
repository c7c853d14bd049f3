"""Live mode: the same workloads against the real local provider on this machine."""
from benchmark.live.run import LiveConfig, run_live

__all__ = ["LiveConfig", "run_live"]
