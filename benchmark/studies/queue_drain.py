"""How fast a function's queue drains under a burst: the router's wake-the-head against
the wake-everyone it replaced, same run.

A CV 8 burst leaves hundreds of calls queued at the gateway for one function.  Each call
that finishes frees one slot; the router used to ``notify_all`` on every release, so every
queued thread woke, took the GIL, found it was not the head of the queue and slept again:
O(queued) wake-ups per finished call.  Now only the head is woken (``router.FunctionPool``).

Here: ``--replicas`` x ``--slots`` slots all taken, ``--queued`` calls waiting, then the
slots are released and every call holds its slot ``--hold-ms`` once it gets one.  Printed:
the wall and CPU time to drain the queue for both, the ideal wall (queued / slots x hold),
and the ratios.  No network, no replicas: the router alone.

    python -m benchmark.studies.queue_drain
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

from local_provider.router import FunctionPool, Replica


class _Handle:  # the router only asks a replica's handle whether it is alive
    pid = 0
    info: dict[str, object] = {}

    def alive(self) -> bool:
        return True

    def terminate(self, grace_s: float) -> None:
        pass


class WakeAll(FunctionPool):
    """The former router: every release wakes every queued call."""

    def _kick(self) -> None:
        for w in self._waiters:
            w.notify()


def drain(cls: type[FunctionPool], a: argparse.Namespace) -> tuple[float, float, int]:
    """(wall s, CPU s, wake-ups) to serve ``a.queued`` calls queued behind full slots."""
    pool = cls("f", a.slots, a.queued + 1)
    for i in range(a.replicas):
        r = Replica(index=i, generation=1, handle=_Handle())  # type: ignore[arg-type]
        pool.add(r)
        pool.set_ready(r)
    held = [pool.acquire(1.0) for _ in range(a.replicas * a.slots)]

    def call() -> None:
        r = pool.acquire(120.0)
        time.sleep(a.hold_ms / 1e3)
        pool.release(r)

    threads = [threading.Thread(target=call) for _ in range(a.queued)]
    for t in threads:
        t.start()
    while pool.snapshot()["queueDepth"] < a.queued:
        time.sleep(0.005)
    c0, t0 = time.process_time(), time.perf_counter()
    for r in held:
        pool.release(r)
    for t in threads:
        t.join()
    return time.perf_counter() - t0, time.process_time() - c0, pool.wakeups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.studies.queue_drain",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queued", type=int, default=250, help="calls waiting (queue size 256)")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8, help="max_inflight per replica")
    ap.add_argument("--hold-ms", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    if min(a.queued, a.replicas, a.slots, a.rounds) < 1 or a.hold_ms < 0:
        ap.error("--queued, --replicas, --slots, --rounds >= 1; --hold-ms >= 0")
    ideal = a.queued / (a.replicas * a.slots) * a.hold_ms
    runs: dict[str, list[tuple[float, float, int]]] = {"wake the head": [], "wake all": []}
    for _ in range(a.rounds):  # interleaved, so drift hits both alike
        runs["wake the head"].append(drain(FunctionPool, a))
        runs["wake all"].append(drain(WakeAll, a))
    print(f"{a.queued} calls queued behind {a.replicas} x {a.slots} slots, each holding its "
          f"slot {a.hold_ms:g} ms; median of {a.rounds} rounds; ideal wall {ideal:.1f} ms\n")
    print(f"{'router':<14} {'wall ms':>9} {'CPU ms':>8} {'wake-ups':>9} {'wall / ideal':>13}")
    med = {}
    for name, rs in runs.items():
        wall, cpu, wakes = (statistics.median(x) for x in zip(*rs, strict=True))
        med[name] = (wall, cpu)
        print(f"{name:<14} {wall * 1e3:9.1f} {cpu * 1e3:8.1f} {wakes:9.0f} "
              f"{wall * 1e3 / ideal if ideal else float('nan'):13.2f}")
    (hw, hc), (aw, ac) = med["wake the head"], med["wake all"]
    print(f"\nwake the head / wake all: wall {hw / aw:.3f}x, CPU {hc / ac:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
