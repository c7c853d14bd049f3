"""gateway_plugin.realise.plan_pods: a replica target over (workers, CPU, pods), fastest
first.  Each row's expectation is worked out by hand in its comment."""
from __future__ import annotations

import pytest

from gateway_plugin.realise import PodChange, PodLimits, PodView, plan_pods

LIM = PodLimits(max_workers=4, min_workers=1, floor_cpu_millis=1000, max_cpu_millis=4000,
                min_pods=1, max_pods=5, new_pod_workers=1)


def pod(name: str, workers: int, cpu: int | None, **kw) -> PodView:
    return PodView(name, workers, cpu, **kw)


CASES = [
    # id, target, cpu per worker, pods, requested pods, limits,
    #   expected pods, expected changes, expected speeds
    ("room: forks only",
     # 2 pods deployed with 4 CPUs (floor 4000) and 1 worker: 2 more workers fit at 1 CPU
     # each; KL spreads them, one per pod; the CPU stays at the floor
     4, 1000, [pod("a", 1, 4000), pod("b", 1, 4000)], 2,
     PodLimits(max_workers=4, floor_cpu_millis=4000, max_cpu_millis=8000),
     2, [PodChange("a", 2, None, 4000), PodChange("b", 2, None, 4000)], ("workers",)),
    ("no room: resize in place, then fork",
     # 1 CPU each, 1 worker each: a 2nd worker needs 2000m <= 4000m: each pod is resized
     4, 1000, [pod("a", 1, 1000), pod("b", 1, 1000)], 2, LIM,
     2, [PodChange("a", 2, 2000, 1000), PodChange("b", 2, 2000, 1000)], ("workers", "cpu")),
    ("room first, resize for the rest",
     # a has room for 1 more (2000m covers 2 workers); the 2nd extra needs a resize: KL puts
     # it on b (1 worker) rather than a (2)
     4, 1000, [pod("a", 1, 2000), pod("b", 1, 1000)], 2, LIM,
     2, [PodChange("a", 2, None, 2000), PodChange("b", 2, 2000, 1000)], ("workers", "cpu")),
    ("CPU at its max: more pods",
     # 2 workers would need 2000m > max 1000m: 2 more pods of 1 worker
     3, 1000, [pod("a", 1, 1000)], 1, PodLimits(max_cpu_millis=1000, floor_cpu_millis=1000),
     3, [], ("pods",)),
    ("resize infeasible: more pods",
     3, 1000, [pod("a", 1, 1000, resizable=False)], 1, LIM, 3, [], ("pods",)),
    ("no control endpoint: pods, and CPU compensation still resizes",
     # not in pod mode: 1 worker per pod, +1 pod; 1500m per worker raises a to 1500m
     2, 1500, [pod("a", 1, 1000, controllable=False)], 1, LIM,
     2, [PodChange("a", None, 1500, 1000)], ("cpu", "pods")),
    ("a starting pod counts: steady",
     # 1 ready worker + 1 pod starting with 1 worker = 2
     2, 1000, [pod("a", 1, 1000), pod("b", 0, 1000, ready=False)], 2, LIM, 2, [], ()),
    ("a pod not listed yet counts too",
     2, 1000, [pod("a", 1, 1000)], 2, LIM, 2, [], ()),
    ("down: retire workers from the pod above its share, CPU follows",
     # 4 workers, want 2: KL removes from a (3) twice -> a=1, b=1; a's 3000m -> 1000m
     2, 1000, [pod("a", 3, 3000), pod("b", 1, 1000)], 2, LIM,
     2, [PodChange("a", 1, 1000, 3000)], ("workers", "cpu")),
    ("down: workers at their minimum, fewer pods",
     1, 1000, [pod("a", 1, 1000), pod("b", 1, 1000), pod("c", 1, 1000)], 3, LIM,
     1, [], ("pods",)),
    ("down: cancel a starting pod before retiring workers",
     # 2 ready + 2 starting x 2 = 6, want 3: cancel one pod (2), retire 1 worker of a
     3, 1000, [pod("a", 2, 2000)], 3, PodLimits(new_pod_workers=2, floor_cpu_millis=1000),
     2, [PodChange("a", 1, 1000, 2000)], ("workers", "cpu", "pods")),
    ("caps: pods at max, a shortfall",
     # a is full (4 workers, 4000m max); 96 short at 2 per new pod -> 49 pods, capped at 5
     100, 1000, [pod("a", 4, 4000)], 1, PodLimits(max_cpu_millis=4000, new_pod_workers=2),
     5, [], ("pods",)),
    ("CPU compensation gives CPU back",
     # 2 workers at 1000m each need 2000m; the pod has 4000m (floor 1000m): down to 2000m
     2, 1000, [pod("a", 2, 4000)], 1, LIM, 1, [PodChange("a", None, 2000, 4000)], ("cpu",)),
    ("within the tolerance: no resize",
     2, 1000, [pod("a", 2, 2010)], 1, LIM, 1, [], ()),
    ("no CPU limit: forks up to max_workers, nothing to resize",
     # 1 + 3 forks = 4 = max; the 5th worker is a new pod
     5, 1000, [pod("a", 1, None)], 1, LIM, 2, [PodChange("a", 4, None, None)],
     ("workers", "pods")),
    ("KL dispersal: new workers go to the emptier pod",
     6, 1000, [pod("a", 3, None), pod("b", 1, None)], 2, LIM,
     2, [PodChange("b", 3, None, None)], ("workers",)),
    ("a pod that is not ready is never changed",
     # b not ready: counts 1 (new_pod_workers); a takes the missing worker
     3, 1000, [pod("a", 1, 2000), pod("b", 1, 1000, ready=False)], 2, LIM,
     2, [PodChange("a", 2, None, 2000)], ("workers",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_plan_pods(case):
    _, target, cpw, pods, requested, lim, want_pods, want_changes, want_speeds = case
    plan = plan_pods(target, cpw, pods, requested, lim)
    assert plan.pods == want_pods, plan.reason
    assert list(plan.changes) == want_changes, plan.reason
    assert plan.speeds == want_speeds, plan.reason
    assert plan.reason


def test_plan_reaches_the_target_when_it_can():
    """From 3 pods holding 2, 1 and 3 workers, every target is met: exactly up to the 12
    workers the 3 pods can hold (4 each, 4000m at most), then with new pods of 2 workers
    (one worker over at most), up to 3 x 4 + 7 x 2 = 26 with 10 pods at most."""
    lim = PodLimits(max_workers=4, floor_cpu_millis=1000, max_cpu_millis=4000, max_pods=10,
                    new_pod_workers=2)
    start = [pod("a", 2, 2000), pod("b", 1, 1000), pod("c", 3, 3000)]
    for target in range(1, 40):
        plan = plan_pods(target, 1000, start, 3, lim)
        if target <= 12:
            assert plan.servers == target, (target, plan)
        elif target <= 26:
            assert plan.servers in (target, target + 1), (target, plan)
        else:
            assert plan.servers == 26 and plan.pods == 10, (target, plan)


def test_fastest_first_order():
    """A pod with room is used before any resize, a resize before any new pod."""
    plan = plan_pods(3, 1000, [pod("a", 1, 2000), pod("b", 1, 1000)], 2, LIM)
    assert [c.pod for c in plan.changes if c.workers] == ["a"] and plan.pods == 2
    plan = plan_pods(5, 1000, [pod("a", 1, 1000)], 1, LIM)
    assert plan.changes == (PodChange("a", 4, 4000, 1000),) and plan.pods == 2
