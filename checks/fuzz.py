"""Fuzz every HTTP API we serve with schemathesis, from the OpenAPI document each publishes.

    python -m checks.fuzz --minutes 5 [--service gateway --service scorer ...] [--seed N]

Every service of checks/fuzz_services.py is started for real on free ports,
its ``/openapi.json`` is loaded, and schemathesis runs its phases (examples,
boundary-value coverage, property-based fuzzing, stateful sequences), then the
property-based phase again with new seeds until the service's share of
``--minutes`` is spent.
Per service it prints the requests sent, the status-code histogram and every
distinct failure.  A failure is: a 5xx or a dropped connection
(``not_a_server_error``), an answer the document does not describe (status,
content type, body schema), a request that breaks the schema yet is accepted
(``negative_data_rejection``), ``/system/*`` answering without credentials
(``ignored_auth``), an undocumented method not answered 405
(``unsupported_method``), a dead process, a traceback in its log, or a
service that no longer answers its health check afterwards.

tests/test_fuzz_*.py call ``fuzz()`` with a small budget and a fixed seed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.engine import events, from_schema

from checks.fuzz_services import NAMES, Fleet, Target

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection", "ignored_auth",
          "unsupported_method")
PHASES = ("examples", "coverage", "fuzzing")


@dataclass
class FuzzResult:
    service: str
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # "check op: title" -> reproduction
    errors: list[str] = field(default_factory=list)  # the fuzzer itself could not test something
    elapsed_s: float = 0.0
    rounds: int = 0  # runs of the engine (the first with every phase)
    alive: bool = True
    healthy: bool = True
    tracebacks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failures or self.errors or self.tracebacks) and self.alive \
            and self.healthy

    def problems(self) -> str:
        lines = [f"{k}\n    {v}" for k, v in self.failures.items()]
        lines += [f"fuzzer error: {e}" for e in self.errors]
        lines += [f"traceback in the log:\n{t}" for t in self.tracebacks]
        if not self.alive:
            lines.append("the process died")
        elif not self.healthy:
            lines.append("the health check failed after the fuzz")
        return "\n".join(lines)


def config(target: Target, *, max_examples: int, seed: int, phases: tuple[str, ...] = PHASES,
           checks: tuple[str, ...] = CHECKS, max_time_s: int | None = None,
           stateful: bool = False) -> schemathesis.Config:
    """Deterministic generation (a fixed seed, hypothesis' derandomised mode) on a fixed budget.

    One worker: with two, Python 3.11 fails now and then compiling in two threads at once
    ("AST constructor recursion depth mismatch") and the case is lost."""
    data: dict[str, Any] = {
        "base-url": target.url, "seed": seed, "request-timeout": 30, "workers": 1,
        "continue-on-failure": True, "suppress-health-check": ["all"],
        "generation": {"max-examples": max_examples, "deterministic": True, "mode": "all",
                       "database": "none", "with-security-parameters": False},
        "checks": {"enabled": False, **{c: {"enabled": True} for c in checks}},
        "phases": {p: {"enabled": p in phases or (p == "stateful" and stateful)}
                   for p in ("examples", "coverage", "fuzzing", "stateful")},
        "warnings": False, "output": {"sanitization": {"enabled": False}},
    }
    if max_time_s:
        data["max-time"] = max_time_s
    if target.auth:
        data["auth"] = {"basic": {"username": target.auth[0], "password": target.auth[1]}}
    return schemathesis.Config.from_dict(data)


def _label(check: str, operation: str, title: str) -> str:
    return f"{check} {operation}: {title}"


def collect(stream: Any, result: FuzzResult) -> None:
    """Fold the engine's events into ``result``."""
    for ev in stream:
        if isinstance(ev, events.ScenarioFinished):
            rec = ev.recorder
            for interaction in rec.interactions.values():
                result.requests += 1
                resp = interaction.response
                result.statuses[str(resp.status_code) if resp is not None else "no answer"] += 1
            for checks in rec.checks.values():
                for c in checks:
                    if c.status == schemathesis.engine.Status.FAILURE and c.failure_info:
                        f = c.failure_info.failure
                        op = getattr(f, "operation", "") or rec.label
                        key = _label(c.name, op, f.title)
                        msg = (f.message or "").strip().replace("\n", " ")[:300]
                        result.failures.setdefault(key, f"{c.failure_info.code_sample}\n"
                                                        f"    {msg}")
        elif isinstance(ev, events.NonFatalError):
            where = [ln.strip() for ln in ev.info.traceback.splitlines()
                     if ln.strip().startswith("File ")][-2:]
            result.errors.append(f"{ev.label}: {ev.info.title}: {ev.info.message}"[:500]
                                 + "".join(f"\n        {w}" for w in where))
        elif isinstance(ev, events.FatalError):
            result.errors.append(f"fatal: {ev.exception!r}"[:500])


def fuzz(target: Target, *, max_examples: int = 10, seed: int = 8, phases: tuple[str, ...] = PHASES,
         checks: tuple[str, ...] = CHECKS, stateful: bool = False,
         path_regex: str | None = None, exclude: dict[str, Any] | None = None,
         budget_s: float | None = None) -> FuzzResult:
    """One service: the phases on ``max_examples`` per operation; with ``budget_s``, then
    the property-based phase again with new seeds until the budget is spent.  Afterwards
    the service must still run, answer its health check and have logged no traceback.
    ``path_regex`` limits the operations fuzzed, ``exclude`` (``BaseSchema.exclude``
    criteria) leaves some out.

    (Not schemathesis' open-ended fuzz mode: in 4.32.5 it first draws one example per
    operation and mode, which took over a minute on the gateway's 36 operations, and it
    fails when a check sends a request of its own, as ``ignored_auth`` does.)"""
    result = FuzzResult(target.name)
    t0 = time.monotonic()
    doc = target.document()

    def run(seed: int, phases: tuple[str, ...], stateful: bool, max_time_s: int | None) -> None:
        cfg = config(target, max_examples=max_examples, seed=seed, phases=phases, checks=checks,
                     stateful=stateful, max_time_s=max_time_s)
        schema: schemathesis.BaseSchema = schemathesis.openapi.from_dict(doc, config=cfg)
        if path_regex:
            schema = schema.include(path_regex=path_regex)
        if exclude:
            schema = schema.exclude(**exclude)
        collect(from_schema(schema).execute(), result)

    run(seed, phases, stateful, int(budget_s) if budget_s else None)
    rounds = 0
    while budget_s and (left := int(budget_s - (time.monotonic() - t0))) >= 5:
        rounds += 1
        run(seed + rounds, ("fuzzing",), False, left)
    result.rounds = rounds + 1
    result.elapsed_s = time.monotonic() - t0
    result.alive = target.alive()
    result.healthy = result.alive and target.healthy()
    result.tracebacks = target.tracebacks()
    return result


def report(r: FuzzResult) -> str:
    hist = " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items()))
    head = (f"{r.service:9s} {r.requests:7d} requests in {r.elapsed_s:6.1f}s ({r.rounds} rounds) "
            f"{r.requests / max(r.elapsed_s, 1e-9):5.1f}/s  statuses {hist}  "
            f"failures {len(r.failures)}  {'ok' if r.ok else 'FAILED'}")
    return head if r.ok else head + "\n" + "\n".join("    " + line for line in
                                                      r.problems().splitlines())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m checks.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="total fuzzing time (default 5)")
    p.add_argument("--service", action="append", choices=NAMES,
                   help="fuzz only this service (repeatable; default: all)")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--max-examples", type=int, default=200,
                   help="examples per operation in the phases before the open-ended fuzz")
    p.add_argument("--model-dir", type=Path,
                   help="a partitioned model to serve stage 0 of (default: cut MiniLM in two)")
    a = p.parse_args(argv)
    if a.minutes <= 0:
        p.error("--minutes must be > 0")
    names = a.service or list(NAMES)
    share_s = a.minutes * 60 / len(names)
    results = []
    with tempfile.TemporaryDirectory(prefix="quart-fuzz-") as tmp:
        t0 = time.monotonic()
        fleet = Fleet(Path(tmp), names, a.model_dir)
        with fleet as targets:
            print(f"started {', '.join(names)} in {time.monotonic() - t0:.1f}s; "
                  f"{share_s:.0f}s each", flush=True)
            for name in names:
                r = fuzz(targets[name], max_examples=a.max_examples, seed=a.seed, stateful=True,
                         budget_s=share_s)
                results.append(r)
                print(report(r), flush=True)
    total = sum(r.requests for r in results)
    bad = [r.service for r in results if not r.ok]
    print(f"total: {total} requests over {len(results)} services; "
          f"{'all ok' if not bad else 'FAILED: ' + ', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
