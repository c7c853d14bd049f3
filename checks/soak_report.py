"""The soak's figures as tables (rich) and as one JSON document.

Growth is measured from the snapshot taken after the warm-up (imports,
thread pools, allocator arenas and Prometheus' first series are made by
then) to the one taken when the load ends.  A component whose pid changed in
between was restarted (by a fault, or by its supervisor): its growth is not
a leak figure and is shown as "restarted".  Replicas come and go with the
scaling, so their line is an aggregate and its growth is that of the
replicas alive at both ends (same pids).
"""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from checks.soak_faults import HEALTH, SUPERVISED, Fault

MB = 1 << 20
GOAL_GROWTH = 0.05


def growth(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Per component: RSS/PSS at both ends, growth (fraction) or why there is none."""
    out: dict[str, Any] = {}
    for comp in sorted(set(start) | set(end)):
        a, b = start.get(comp, {}), end.get(comp, {})
        row: dict[str, Any] = {"pids_start": a.get("pids", []), "pids_end": b.get("pids", []),
                               "rss_start": a.get("rss", 0), "rss_end": b.get("rss", 0),
                               "pss_start": a.get("pss", 0), "pss_end": b.get("pss", 0),
                               "growth": None, "note": ""}
        if comp == "replicas":
            # replicas come and go with the scaling, and a young fork's RSS grows as it first
            # touches the shared weights: judge those alive at both ends, by their own RSS
            pa, pb = a.get("per_pid", {}), b.get("per_pid", {})
            both = [p for p in pa if p in pb]
            row["note"] = f"{a.get('n', 0)} -> {b.get('n', 0)} replicas"
            if both and sum(pa[p] for p in both):
                row["growth"] = sum(pb[p] for p in both) / sum(pa[p] for p in both) - 1
                row["note"] += f"; growth of the {len(both)} alive at both ends"
        elif not a.get("pids") or not b.get("pids"):
            row["note"] = "absent at " + ("start" if not a.get("pids") else "end")
        elif a["pids"] != b["pids"]:
            row["note"] = "restarted"
        elif a["rss"]:
            row["growth"] = b["rss"] / a["rss"] - 1
        out[comp] = row
    return out


THIRD_PARTY = ("prometheus", "redis")  # not ours; Prometheus' head block grows by design


def flat(rows: dict[str, Any]) -> tuple[bool, list[str]]:
    """The issue's goal for our processes: each grew < 5 % after the warm-up (replicas: those
    alive throughout).  Prometheus and Redis are reported beside it, not judged: Prometheus keeps
    every sample of the last ~2 h in its in-memory head block, so it grows for that long by
    design."""
    over = [c for c, r in rows.items() if c not in THIRD_PARTY and r["growth"] is not None
            and r["growth"] >= GOAL_GROWTH]
    return not over, over


def _mb(b: int) -> str:
    return f"{b / MB:.1f}"


def print_memory(con: Console, rows: dict[str, Any], warmup_s: float, end_s: float) -> None:
    t = Table(title=f"Memory: after the warm-up ({warmup_s:.0f}s) -> end of load ({end_s:.0f}s)")
    for col in ("process", "pid", "RSS start MB", "RSS end MB", "growth", "PSS start MB",
                "PSS end MB", "note"):
        t.add_column(col, justify="left" if col in ("process", "note", "pid") else "right")
    for comp, r in rows.items():
        pids = r["pids_end"] or r["pids_start"]
        pid = "" if comp == "replicas" else " -> ".join(
            dict.fromkeys(str(p) for p in (*r["pids_start"], *r["pids_end"])))
        g = "" if r["growth"] is None else f"{r['growth'] * 100:+.1f}%"
        t.add_row(comp, pid if pids else "-", _mb(r["rss_start"]), _mb(r["rss_end"]), g,
                  _mb(r["pss_start"]), _mb(r["pss_end"]), r["note"])
    con.print(t)


def print_replicas(con: Console, per: dict[str, Any]) -> None:
    t = Table(title="Replicas (provider stats, sampled every 0.5 s)")
    for col in ("function", "at start", "created", "destroyed", "created by tier"):
        t.add_column(col, justify="left" if col in ("function", "created by tier") else "right")
    for fn, d in sorted(per.items()):
        tiers = ", ".join(f"{k or '?'}: {v}" for k, v in sorted(d["tiers"].items()))
        t.add_row(fn, str(d["initial"]), str(d["created"]), str(d["destroyed"]), tiers)
    con.print(t)


def print_faults(con: Console, faults: list[Fault], restart_delay_s: float) -> None:
    t = Table(title="Faults (kill -9; SIGSTOP for hung_replica): time to recover and "
                    "requests lost")
    for col in ("at s", "kind", "killed", "brought back by", "healthy s", "serving s",
                "recovery s", "lost", "note"):
        t.add_column(col, justify="right" if col.endswith("s") or col == "lost" else "left")
    for f in faults:
        kill = f.t_kill or 0.0

        def rel(x: float | None, kill: float = kill) -> str:
            return "-" if x is None else f"{x - kill:.1f}"
        who = (f"the soak (supervisor), +{restart_delay_s:g}s" if f.kind in SUPERVISED
               else "provider: ejection" if f.kind == "hung_replica"
               else "quart-faas up's supervisor" if f.kind == "gateway"
               else "keys_manager" if f.kind == "zygote"
               else "provider's launcher" if f.kind == "keys_manager"
               else "provider reconcile")
        note = f.error or ", ".join(f"{k}: {v}" for k, v in sorted(f.lost_codes.items()))
        t.add_row(f"{f.t_kill:.1f}" if f.t_kill is not None else f"{f.at_s:g}", f.kind,
                  f.target or "-", who, rel(f.t_healthy), rel(f.t_serving),
                  "-" if f.recovery_s is None else f"{f.recovery_s:.1f}", str(f.lost), note)
    con.print(t)
    con.print("healthy = " + "; ".join(f"{k}: {v}" for k, v in HEALTH.items()
                                       if any(f.kind == k for f in faults)))
    con.print("serving = send time of the first success after the last request lost to the "
              "fault (the kill when none was lost); recovery = the later of the two, from the "
              "kill; lost = failed requests in flight at the kill or sent before healthy + "
              "settle")
