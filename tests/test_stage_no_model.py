"""A stage without its model stops at start with what to do (the plain `faas-cli up` path:
the partition is on the build machine, not in the pod), instead of serving errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from functions.stage.config import StageConfig, require_model
from tests.conftest import REPO

INDEX = REPO / "template" / "quart-python" / "index.py"


@pytest.mark.parametrize("model_dir", [".quart/models/minilm-3", None])
def test_the_template_exits_with_the_remedy(tmp_path, model_dir):
    """index.py in front of the stage handler, as in the pod (cwd /home/app there): exit
    status 1 (the watchdog then exits and the pod restarts, never Ready) and one message
    naming the variable, where it looked, and how to bake the partition in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_")}
    env.update({"QUART_PRELOAD": "", "QUART_HANDLER_DIR": str(REPO / "functions" / "stage"),
                "QUART_STAGE": "1", "PYTHONPATH": str(REPO)})
    if model_dir:
        env["QUART_MODEL_DIR"] = model_dir
    r = subprocess.run([sys.executable, str(INDEX)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("quart stage 1: no partitioned model to serve")
    assert ("QUART_MODEL_DIR='.quart/models/minilm-3'" if model_dir
            else "QUART_MODEL_DIR is unset") in last
    assert str(tmp_path) in last or "/var/openfaas/models" in last
    assert "QUART_MODEL_DIR=/home/app/function/models/minilm-3" in last
    assert "Traceback" not in r.stderr


def test_a_partition_there_passes(minilm3):
    cfg = StageConfig.from_env({"QUART_MODEL_DIR": str(minilm3)})
    require_model(cfg, {"QUART_MODEL_DIR": str(minilm3)})  # no exit
