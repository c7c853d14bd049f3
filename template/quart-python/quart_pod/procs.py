"""Process helpers of the zygote (zygote.py): signals to workers, their exit status, the
parent-death signal and a worker's fresh seeds. Their own module so zygote.py stays about
the loop."""
from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def status(code: int) -> str:
    """A wait status in words: "signal SIGKILL", "exit 1"."""
    if os.WIFSIGNALED(code):
        return f"signal {signal.Signals(os.WTERMSIG(code)).name}"
    return f"exit {os.waitstatus_to_exitcode(code)}"


def pdeathsig(sig: int) -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def reseed() -> None:
    """Fresh seeds for the RNGs a worker can reach, and its torch thread count (the pool is
    created in the worker). As keys_manager.zygote does, which a pod's image lacks."""
    import random

    seed = int.from_bytes(os.urandom(8), "little")
    random.seed(seed)
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed(seed % 2**32)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.default_generator.manual_seed(seed)
        torch.set_num_threads(max(1, int(os.environ.get("QUART_TORCH_THREADS", "1") or 1)))
