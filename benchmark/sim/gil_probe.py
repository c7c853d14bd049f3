"""Why the live pipeline is slower under load than its CPU explains: the GIL convoy.

The simulator treats a replica's compute as CPU work shared with other
threads only through the cores.  Live, a replica is one Python process: its
waitress threads parse, encode and forward other requests while one thread
runs ``forward``, and torch releases the GIL around every operator and must
take it back afterwards; with another thread holding it, each re-acquisition
waits (Beazley, "Understanding the Python GIL", PyCon 2010: the convoy
effect).  This probe times MiniLM stage 1's forward pass alone and with one
other thread of the same process doing pure-Python work (``json.loads`` in a
loop), optionally with a shorter ``sys.setswitchinterval``.

    python -m benchmark.sim.gil_probe [--switch-interval 0.0005]
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from . import livepipe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=40)
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="seconds (Python's default is 0.005)")
    a = ap.parse_args(argv)
    if a.passes < 5:
        ap.error("--passes must be >= 5")
    import torch

    from functions.stage.bert import Stage

    if not (livepipe.CACHED / "manifest.json").is_file():
        ap.error(f"no MiniLM partition at {livepipe.CACHED}: run `quart-faas partition "
                 "--model all-MiniLM-L6-v2 --stages 3 --out .quart/models/minilm-3`")
    if a.switch_interval is not None:
        sys.setswitchinterval(a.switch_interval)
    torch.set_num_threads(1)
    first, second = Stage.load(livepipe.CACHED, 0), Stage.load(livepipe.CACHED, 1)
    x, mask = first.tokenize(json.loads(livepipe.body(8))["inputs"])

    def median_ms() -> float:
        times = []
        for _ in range(a.passes):
            t = time.perf_counter()
            second.forward(h, mask)
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2] * 1e3

    with torch.inference_mode():
        h = first.forward(x, mask)
        median_ms()  # warm-up
        alone = median_ms()
        stop = threading.Event()
        blob = json.dumps({"a": list(range(20000))})

        def busy() -> None:
            while not stop.is_set():
                json.loads(blob)

        t = threading.Thread(target=busy, daemon=True)
        t.start()
        try:
            shared = median_ms()
        finally:
            stop.set()
            t.join()
    print(f"MiniLM stage 1 forward, 8 sentences, 1 torch thread, switch interval "
          f"{sys.getswitchinterval() * 1e3:g} ms: alone p50 {alone:.1f} ms; with one "
          f"GIL-busy thread p50 {shared:.1f} ms ({shared / alone:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
