"""The queue-drain study runs both routers on real threads and prints their ratio."""
from __future__ import annotations

from benchmark.studies import queue_drain


def test_the_study_drains_both_and_the_head_only_router_wakes_once_a_call(capsys):
    assert queue_drain.main(["--queued", "40", "--replicas", "1", "--slots", "2",
                             "--hold-ms", "0", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0] + " " + line.split()[1]: line.split()
            for line in out.splitlines() if line.startswith("wake ") and "/" not in line}
    head, every = rows["wake the"], rows["wake all"]
    # at most two wake-ups per call served: its own, and the one that finds the slot taken
    assert int(head[-2]) <= 2 * 40 + 10
    assert int(every[-2]) > 200  # every queued call woken at every release
    assert "wake the head / wake all: wall" in out
