"""Workloads and checks shared by the planner tests."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import yaml

from planner.assign import Plan

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "planner"



def _minilm_stack() -> Path:
    """stack.yml up to its second pipeline (the opt decoder): the MiniLM pipeline the planner
    tests were written for, text, comments and anchors as they are in stack.yml."""
    text = (REPO / "stack.yml").read_text().split("\n  opt-stage-0:")[0]
    path = Path(tempfile.mkdtemp(prefix="quart-planner-stack-")) / "stack.yml"
    atexit.register(shutil.rmtree, path.parent, True)  # one per test session, gone after it
    path.write_text(text.rstrip("\n") + "\n")
    return path


STACK = _minilm_stack()



# --------------------------------------------------------------------------- fixtures


def chain_config(n_workflows: int = 4, length: int = 3, gpus: dict[str, int] | None = None) -> dict:
    """``n_workflows`` chains of ``length`` distinct models each: affinity is everything.

    Model names interleave the chains (m0 of chain 0, m0 of chain 1, ...) so
    that a model's neighbours in config or name order are *not* its partners.
    """
    gpus = gpus or {}
    models = {}
    workflows = {}
    for w in range(n_workflows):
        nodes, edges = [], []
        for k in range(length):
            name = f"m{k}_{w}"
            models[name] = {
                "gpus_required": gpus.get(name, 1),
                "inference_time_mean": 1.0 + 0.25 * k,
                "inference_time_std": 0.2,
                "output_mb": 4,
            }
            nodes.append({"id": f"n{k}", "model": name})
            if k:
                edges.append({"from": f"n{k - 1}", "to": f"n{k}"})
        workflows[f"chain{w}"] = {"nodes": nodes, "edges": edges, "weight": 1 + w % 2}
    ordered = {k: models[k] for k in sorted(models, key=lambda n: (n.split("_")[0], n))}
    return {
        "models": ordered,
        "workflows": workflows,
        "network": {"intra_server_transfer_s": 0.01, "inter_server_transfer_s": 0.3},
    }


def write(path: Path, data: dict | str) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    elif path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return path


def check_layout(plan: Plan) -> None:
    """Each instance on consecutive GPUs of its own server; no GPU hosts two instances."""
    used: set[int] = set()
    for inst in plan.instances:
        assert list(inst.gpus) == list(range(inst.gpus[0], inst.gpus[0] + len(inst.gpus))), inst
        assert {plan.server_of_gpu(g) for g in inst.gpus} == {inst.server}, inst
        assert not used & set(inst.gpus), inst
        used |= set(inst.gpus)
