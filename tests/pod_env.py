"""Pods for the tests: the real fwatchdog + index.py in pod mode, each in its own network
namespace and CPU cgroup (local_provider/pods.py), and what the tests send them."""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from local_provider.pods import Pod, PodRunner, PodSpec, shrinkwrap
from tests.conftest import REPO, openfaas_bin, require_tool, skip_outside_ci

TEMPLATE = REPO / "template" / "quart-python"
STAGE = REPO / "functions" / "stage"
ECHO = REPO / "tests" / "fixtures" / "echo"
TOKEN = "pod-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def template_module(name: str) -> Any:
    """A module of the template's ``quart_pod`` package (it ships beside index.py, not on
    the project's path), imported under its own name."""
    import importlib
    import sys

    if str(TEMPLATE) not in sys.path:
        sys.path.append(str(TEMPLATE))  # appended: nothing of the project is shadowed
    return importlib.import_module(name)


def make_runner(state: Path) -> PodRunner:
    """A runner with the upstream watchdog; root for namespaces and cgroups (CI is root)."""
    exe = openfaas_bin("fwatchdog")
    require_tool("ip"), require_tool("nsenter")
    if os.geteuid() != 0:
        skip_outside_ci("pods need root (a network namespace and a cgroup each)")
    return PodRunner(state, watchdog=exe)


def start_pod(runner: PodRunner, name: str, handler: Path, env: dict[str, str],
              token: str | None = TOKEN, cpu_millis: int | None = None) -> Pod:
    app = shrinkwrap(TEMPLATE, handler, runner.state_dir / "apps" / name)
    secrets = {"quart-control-token": token.encode() + b"\n"} if token else {}
    pod = runner.start(PodSpec(name, app, {**os.environ, **env}, secrets, cpu_millis))
    try:
        pod.wait_ready(180)
    except BaseException:
        print(pod.log.read_text(errors="replace")[-3000:])
        pod.stop(1)
        raise
    return pod


def stage_body(model_dir: Path, stage: int, seq: int = 16, batch: int = 2) -> bytes:
    """Activations for ``stage`` (> 0): what the stage before it sends."""
    import torch

    from functions.stage import codec
    from functions.stage.bert import read_manifest

    man = read_manifest(model_dir)
    hidden = torch.randn(batch, seq, man["config"]["hidden_size"],
                         generator=torch.Generator().manual_seed(7))
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, seq // 2:] = 0
    return codec.encode(hidden, mask, {"model": man["model"], "stage": str(stage - 1)})


def post_stage(url: str, body: bytes, timeout: float = 60) -> requests.Response:
    from functions.stage.codec import CONTENT_TYPE

    return requests.post(url, data=body, headers={"Content-Type": CONTENT_TYPE},
                         timeout=timeout)


def workers(pod: Pod) -> dict[str, Any]:
    r = requests.get(pod.url + "/_/quart/workers", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def set_workers(pod: Pod, n: int) -> dict[str, Any]:
    r = requests.put(pod.url + "/_/quart/workers", json={"workers": n}, headers=AUTH,
                     timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def worker_pids(pod: Pod) -> set[int]:
    """The pod's processes but the watchdog and the zygote."""
    zygote = workers(pod)["pid"]
    return set(pod.pids()) - {pod.pid, zygote}


def worker_pids_str(pod: Pod) -> set[str]:
    return {str(p) for p in worker_pids(pod)}


def metric(pod: Pod, name: str) -> float:
    text = requests.get(pod.url + "/_/quart/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in {text[:2000]}"
    return float(m[1])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s:g}s")
        time.sleep(0.01)
