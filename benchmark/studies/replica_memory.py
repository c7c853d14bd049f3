"""What a forked replica writes to: its private pages, mapping by mapping, from /proc/PID/smaps.

Why: a replica forked from the zygote shares the stage's weights and the interpreter's
state copy-on-write, so its cost is the pages it dirties after the fork (issue 17's goal:
under 4 MiB beyond its request buffers).  PSS alone says how much; this says where, so
that what can go is told apart from what cannot (the kernel's own per-process pages, the
stack a thread touches, the allocator arenas a request fills).

One provider, the last stage of the model (it calls no other function), T0 (fork):

  ready      the new replica just ready (the pool's worker handed over, or forked)
  1 call     after its first request
  N calls    after ``--calls`` requests (request buffers: what calls add to ready)

Pages are grouped by mapping: ``[heap]``, ``[stack]``, anonymous (malloc's arenas and
mmaps, torch's allocator, Python's obmalloc arenas), the T1 weight segment (``/dev/shm``),
and each file (shared libraries' data and relocations written at load).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmark.studies import scaleup as su
from local_provider.auth import BasicAuth

MIB = 1024 * 1024
HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")
GOAL_MIB = 4.0


def category(path: str) -> str:
    """A mapping's group: file mappings by file name, the T1 segment, or the kind."""
    if not path:
        return "anonymous"
    if path.startswith("/dev/shm/"):
        return "T1 segment (/dev/shm)"
    if path.startswith("["):
        return "[stack]" if path.startswith("[stack") else path
    name = Path(path.split(" (deleted)")[0]).name
    if name.startswith("python3"):
        return "python binary"
    return name


def private_by_mapping(smaps: str) -> dict[str, dict[str, int]]:
    """Private_Dirty, Private_Clean and Swap (bytes) summed per ``category``."""
    out: dict[str, dict[str, int]] = {}
    cur: dict[str, int] | None = None
    for line in smaps.splitlines():
        m = HEADER.match(line)
        if m:
            cur = out.setdefault(category(m.group(1).strip()),
                                 {"Private_Dirty": 0, "Private_Clean": 0, "Swap": 0})
            continue
        name, _, rest = line.partition(":")
        if cur is not None and name in cur:
            cur[name] += int(rest.split()[0]) * 1024
    return {k: v for k, v in out.items() if any(v.values())}


def snapshot(pid: int) -> dict[str, dict[str, int]]:
    return private_by_mapping(Path(f"/proc/{pid}/smaps").read_text())


def dirty(snap: dict[str, dict[str, int]]) -> int:
    return sum(v["Private_Dirty"] + v["Swap"] for v in snap.values())


def run(b: su.Bench, key: str, calls: int) -> dict[str, Any]:
    mdir, man = su.ensure_partition(key)
    stage = man["num_stages"] - 1
    name = f"mem-{key}-{stage}"
    body = su.stage_body(man, stage)
    b.launcher.mode, b.launcher.weights = su.TIERS["T0"]
    b.req("POST", f"{b.gateway}/system/functions", su.deployment(name, mdir, stage))
    try:
        b.wait(name, 1)
        base = b.replicas(name)[0]
        for _ in range(5):
            b.call(base["url"], body)
        b.scale(name, 2)
        b.wait(name, 2)
        new = next(r for r in b.replicas(name) if r["pid"] != base["pid"])
        snaps = {"ready": snapshot(new["pid"])}
        b.call(new["url"], body)
        snaps["1 call"] = snapshot(new["pid"])
        for _ in range(calls - 1):
            b.call(new["url"], body)
        snaps[f"{calls} calls"] = snapshot(new["pid"])
        return {"model": man["model"], "stage": stage, "pid": new["pid"],
                "tier": new.get("tier"), "zygote_pid": new.get("zygote_pid"),
                "parameter_bytes": man["stages"][stage]["parameter_bytes"], "snapshots": snaps}
    finally:
        with contextlib.suppress(Exception):
            b.req("DELETE", f"{b.gateway}/system/functions", {"functionName": name})


def report(res: dict[str, Any], top: int = 12) -> None:
    snaps: dict[str, dict[str, dict[str, int]]] = res["snapshots"]
    cols = list(snaps)
    last = snaps[cols[-1]]
    rows = sorted(set().union(*snaps.values()),
                  key=lambda k: -(last.get(k, {}).get("Private_Dirty", 0)))
    print(f"{res['model']} stage {res['stage']}: replica pid {res['pid']} "
          f"({res.get('tier')}, zygote {res.get('zygote_pid')}); private dirty KiB per mapping")
    print(f"  {'mapping':34s}" + "".join(f"{c:>12s}" for c in cols))
    shown = rows[:top]
    for k in shown:
        cells = "".join(f"{snaps[c].get(k, {}).get('Private_Dirty', 0) / 1024:12.0f}"
                        for c in cols)
        print(f"  {k[:34]:34s}{cells}")
    rest = [k for k in rows if k not in shown]
    if rest:
        sums = [sum(snaps[c].get(k, {}).get("Private_Dirty", 0) for k in rest) for c in cols]
        cells = "".join(f"{v / 1024:12.0f}" for v in sums)
        print(f"  {f'({len(rest)} more)':34s}{cells}")
    totals = {c: dirty(snaps[c]) / MIB for c in cols}
    print(f"  {'total private dirty (MiB)':34s}" + "".join(f"{totals[c]:12.2f}" for c in cols))
    buffers = totals[cols[-1]] - totals[cols[0]]
    print(f"ready {totals[cols[0]]:.2f} MiB (goal <= {GOAL_MIB:g} MiB beyond request buffers: "
          f"{'met' if totals[cols[0]] <= GOAL_MIB else 'missed'}); request buffers "
          f"(ready -> {cols[-1]}) {buffers:+.2f} MiB; stage parameters "
          f"{res['parameter_bytes'] / MIB:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", choices=sorted(su.MODELS))
    ap.add_argument("--calls", type=int, default=50, help="requests before the last snapshot")
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    if a.calls < 1:
        ap.error("--calls must be >= 1")
    state = Path(tempfile.mkdtemp(prefix="quart-mem-")).absolute()
    su._log_to(state / "logs")
    server, stop, launcher, pw = su._provider(state)
    b: su.Bench | None = None
    try:
        urls = su._start(server, state)
        b = su.Bench(urls["gateway_url"], urls["provider_url"],
                     BasicAuth("admin", pw.read_text().strip()), launcher)
        res = run(b, a.model, a.calls)
        report(res)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        return 0
    finally:
        stop.set()
        server.join(timeout=60)
        launcher.close()
        su.cleanup(b)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
