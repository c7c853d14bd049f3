"""Golden decisions: the control cycle decides exactly what main's cycle decided on the
same recorded inputs (gateway listing + Prometheus answers, benchmark/studies/cycle_inputs.py).

Why: the cycle was made faster (training off the cycle's thread, one Redis round trip for
a cycle's writes); a faster cycle that decides differently would be a regression.  The file
tests/data/golden_cycle_decisions.json was written by main's Controller (before the change)
with ``python -m tests.test_cycle_golden``; every value (replicas, CPU, policy, predicted
CV) must match exactly, not approximately.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.studies import cycle_inputs
from tests.redis_env import RedisServer

GOLDEN = Path(__file__).parent / "data" / "golden_cycle_decisions.json"
PIPES, SPP, CYCLES = 12, 4, 8


def decide_all(redis_url: str) -> dict[str, list[Any]]:
    rng = np.random.default_rng(7)
    bodies, svc = cycle_inputs.function_bodies(PIPES, SPP, rng)
    prom = cycle_inputs.record_prometheus(svc, CYCLES, rng)
    out: dict[str, list[Any]] = {}
    for predictor in ("qna", "gat"):
        rp = cycle_inputs.replay(bodies, prom, redis_url, predictor)
        out[predictor] = [cycle_inputs.decisions_digest(rp.step()) for _ in range(CYCLES)]
        out[predictor + "_state"] = [json.loads(json.dumps(rp.ctl._state_doc()))]
    return out


@pytest.fixture
def rs(tmp_path):
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def test_the_cycle_decides_what_mains_cycle_decided(rs):
    got = json.loads(json.dumps(decide_all(rs.url)))  # tuples -> lists, as stored
    want = json.loads(GOLDEN.read_text())
    for key in want:
        for k, (g, w) in enumerate(zip(got[key], want[key], strict=True)):
            assert g == w, f"{key}: cycle {k} decided differently"


if __name__ == "__main__":  # regenerate: only from a commit whose decisions are the reference
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            GOLDEN.write_text(json.dumps(decide_all(server.url), indent=None) + "\n")
        finally:
            server.stop()
    print(f"wrote {GOLDEN}", file=sys.stderr)
