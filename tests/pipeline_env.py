"""A real deployment for the end-to-end tests: `quart-faas up -f stack.yml` on free ports.

Gateway + provider + replicas + Prometheus are real processes; `quart-faas down`
stops them, and the fixture checks nothing is left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from local_provider import services

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Deployment:
    gateway: str
    metrics: str
    prometheus: str
    state: Path
    auth: tuple[str, str]
    env: dict[str, str]


def cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quart_faas.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def up(state: Path, model_dir: Path, stack: Path = REPO / "stack.yml",
       extra_env: dict[str, str] | None = None) -> Deployment:
    gw, pv, mp, pp, kp = (services.free_port() for _ in range(5))
    env = {**os.environ, "QUART_MODEL_DIR": str(model_dir), "QUART_STATE_DIR": str(state),
           **(extra_env or {})}
    env.pop("QUART_GATEWAY_URL", None)
    gateway = f"http://127.0.0.1:{gw}"
    r = cli(["up", "-f", str(stack), "-g", gateway, "--provider-port", str(pv),
             "--metrics-port", str(mp), "--keys-metrics-port", str(kp), "--prometheus-url", f"http://127.0.0.1:{pp}",
             "--state-dir", str(state)], env)
    if r.returncode != 0:
        cli(["down", "--state-dir", str(state)], env)
        raise AssertionError(f"quart-faas up failed:\n{r.stdout}\n{r.stderr}")
    password = (state / "basic-auth-password").read_text().strip()
    return Deployment(gateway, f"http://127.0.0.1:{mp}", f"http://127.0.0.1:{pp}", state,
                      ("admin", password), env)


def replica_pids(function: str, gateway: str | None = None) -> list[int]:
    """Replica processes of a function, found by the QUART_FUNCTION_NAME in their environment.

    ``gateway`` keeps only the replicas of one deployment (their QUART_GATEWAY_URL): another
    deployment on the same machine (a demo, a soak) runs functions of the same names.
    """
    want = f"QUART_FUNCTION_NAME={function}".encode()
    scope = f"QUART_GATEWAY_URL={gateway}".encode() if gateway else None
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = (d / "environ").read_bytes().split(b"\0")
                if want in env and (scope is None or scope in env):
                    pids.append(int(d.name))
            except OSError:
                continue
    return sorted(pids)


def serving_pids(dep: Deployment, function: str) -> list[int]:
    """Pids of the function's replicas as the provider lists them (zygotes are not replicas)."""
    import requests

    r = requests.get(f"{dep.gateway}/system/quart/stats", auth=dep.auth, timeout=5)
    r.raise_for_status()
    return sorted(i["pid"] for i in r.json().get(function, {}).get("instances", []) if "pid" in i)
