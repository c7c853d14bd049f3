"""deploy/: the plugin's settings are parsed from the manifests' own environment, Redis admits
only the plugin, and the plugin's role allows every Kubernetes API call its actuator makes."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import redis
import yaml

from gateway_plugin.config import PluginConfig
from tests.k8s_manifests import (
    REPO,
    VERSIONS,
    container,
    env_of,
    find,
    kubectl,
    render_all,
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return render_all()


# ------------------------------------------------------------------ the plugin

def _plugin_env(docs: list[dict], secret_dir: Path) -> tuple[dict, dict[str, str]]:
    dep = find(docs, "Deployment", "quart-gateway-plugin")
    c = container(dep, "plugin")
    cms = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env = env_of(c, cms, {("basic-auth", "basic-auth-user"): "admin",
                          ("quart-redis", "password"): "0123abcd"})
    # the test stands in for the kubelet's secret mount at the manifest's path
    mount = next(m for m in c["volumeMounts"] if m["name"] == "auth")
    assert env["secret_mount_path"] == mount["mountPath"] == "/var/openfaas/secrets"
    env["secret_mount_path"] = str(secret_dir)
    return dep, env


def test_plugin_settings_come_from_the_manifest(rendered, tmp_path):
    docs = rendered["base"]
    (tmp_path / "basic-auth-password").write_text("s3cret\n")
    dep, env = _plugin_env(docs, tmp_path)
    cfg = PluginConfig.from_env(env)
    mount = next(m for m in container(dep, "plugin")["volumeMounts"] if m["name"] == "auth")
    # the gateway's credentials the OpenFaaS way: user from the Secret, password from the
    # file basic-auth-password under $secret_mount_path
    assert cfg.auth == ("admin", "s3cret")
    pod = dep["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "auth")
    secrets = [src["secret"] for src in vol["projected"]["sources"]]
    assert secrets[0] == {"name": "basic-auth"}
    # the pods' control token beside it, at the path the plugin reads by default
    assert secrets[1] == {"name": "quart-control-token", "optional": True,
                          "items": [{"key": "quart-control-token",
                                     "path": "quart-control-token"}]}
    assert cfg.control_token_file == f"{mount['mountPath']}/quart-control-token"
    assert cfg.actuator == "kubernetes" and cfg.function_namespace == "openfaas-fn"
    assert cfg.pod_control_port == 8082  # the pods' zygotes, not their watchdogs' queue
    assert mount["mountPath"] == "/var/openfaas/secrets"
    assert urlparse(cfg.gateway_url).hostname == "gateway.openfaas"
    assert urlparse(cfg.prometheus_url).hostname == "prometheus.openfaas"
    # leader election needs two replicas sharing one Redis and one key prefix
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    conn = redis.connection.parse_url(cfg.redis_url)
    assert (conn["host"], conn["port"], conn["password"]) == ("quart-redis.openfaas", 6379,
                                                              "0123abcd")
    svc = find(docs, "Service", "quart-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    # one port everywhere: what the plugin binds, the container port, probes, Service,
    # the Prometheus annotation
    c = container(dep, "plugin")
    assert cfg.bind == "0.0.0.0"
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    assert cfg.port == port == 8084
    # liveness only on what a restart mends (a stuck loop); readiness on the inputs too
    for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"),
                        ("readinessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io.port"] == str(port)
    plugin_svc = find(docs, "Service", "quart-gateway-plugin")
    assert plugin_svc["spec"]["ports"][0]["targetPort"] == "http"
    assert plugin_svc["spec"]["selector"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    pdb = find(docs, "PodDisruptionBudget", "quart-gateway-plugin")
    assert pdb["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("kind, workload, name, module", [
    ("Deployment", "quart-gateway-plugin", "plugin", "gateway_plugin/config.py"),
    ("DaemonSet", "quart-keys-manager", "keys-manager", "keys_manager/config.py")])
def test_every_variable_set_is_one_the_code_reads(rendered, kind, workload, name, module):
    """A misspelt variable would be silently ignored and its default used."""
    docs = rendered["base"]
    c = container(find(docs, kind, workload), name)
    cms = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    names = {e["name"] for e in c.get("env", [])} | {
        k for src in c.get("envFrom", []) for k in cms[src["configMapRef"]["name"]]}
    read = (REPO / module).read_text()
    if module == "gateway_plugin/config.py":  # the credentials are read the OpenFaaS way there
        read += (REPO / "webguard" / "__init__.py").read_text()
    # HOME: for libraries that want a writable home; REDIS_PASSWORD: expanded into REDIS_URL
    unread = {n for n in names - {"HOME", "REDIS_PASSWORD"} if f'"{n}"' not in read}
    assert not unread, f"{module} reads none of {sorted(unread)}"


def test_redis_only_admits_the_plugin(rendered):
    docs = rendered["base"]
    pol = find(docs, "NetworkPolicy", "quart-redis")
    plugin_labels = find(docs, "Deployment", "quart-gateway-plugin")["spec"]["template"][
        "metadata"]["labels"]
    (rule,) = pol["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= plugin_labels.items()
    sts = find(docs, "StatefulSet", "quart-redis")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    args = container(sts, "redis")["args"]
    assert args[args.index("--appendonly") + 1] == "yes"


# ------------------------------------------------------------------ the plugin's API access

def _verb(method: str, path: str, query: dict[str, str]) -> tuple[str, str]:
    """(resource, verb) of a request, as the API server's RBAC sees it."""
    m = re.fullmatch(r"/api/v1/namespaces/openfaas-fn/pods(?:/([^/]+))?(/resize)?", path)
    assert m, path
    if m[2]:
        return "pods/resize", {"PATCH": "patch", "PUT": "update", "GET": "get"}[method]
    if method == "GET":
        return "pods", "watch" if query.get("watch") in ("true", "True", "1") else \
            ("get" if m[1] else "list")
    return "pods", method.lower()


def test_the_role_allows_every_call_the_actuator_makes(rendered):
    """The kubernetes actuator's own calls (list, resize, the watch that awaits it), made
    against the API-server stand-in and mapped to RBAC verbs: each one is in the Role."""
    from kubernetes import client

    from gateway_plugin.kube_pods import KubernetesPods
    from tests.fake_kube_api import FakeKubeAPI, function_pod

    (role,) = [d for d in rendered["base"] if d["kind"] == "Role"]
    allowed = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    with FakeKubeAPI([function_pod("fn-a", "fn-a-1", "127.0.0.2")]) as api:
        conf = client.Configuration(host=api.url)
        conf.api_key["BearerToken"] = "Bearer sa-token"
        src = KubernetesPods(client.CoreV1Api(client.ApiClient(conf)), "openfaas-fn")
        (pod,) = src.pods(["fn-a"])["fn-a"]
        assert src.resize("fn-a", pod, 2000, wait_s=1.0) is True
        used = {_verb(r.method, r.path, r.query) for r in api.requests}
    assert used == {("pods", "list"), ("pods/resize", "patch"), ("pods", "watch")}
    assert used <= allowed


def test_the_control_token_secrets_as_the_guide_makes_them(tmp_path):
    """docs/cluster.md creates the token twice, same value: for the functions (an OpenFaaS
    secret in openfaas-fn, mounted by faas-netes at /var/openfaas/secrets/NAME) and for the
    plugin (openfaas).  Both, as kubectl makes them, are valid Secrets whose key is the file
    name both sides read."""
    guide = (REPO / "docs" / "cluster.md").read_text()
    cmds = re.findall(r"^kubectl -n (openfaas(?:-fn)?) create secret generic "
                      r"quart-control-token (--from-literal=quart-control-token=\"\$TOKEN\")$",
                      guide, re.MULTILINE)
    assert sorted(ns for ns, _ in cmds) == ["openfaas", "openfaas-fn"]
    stack = yaml.safe_load((REPO / "stack.yml").read_text())
    for ns, literal in cmds:
        r = subprocess.run([kubectl(), "-n", ns, "create", "secret", "generic",
                            "quart-control-token", literal.replace('"$TOKEN"', "abc123"),
                            "--dry-run=client", "-o", "yaml"], capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        secret = yaml.safe_load(r.stdout)
        for version in VERSIONS:
            kubernetes_validate.validate(secret, version, strict=True)
        assert list(secret["data"]) == ["quart-control-token"]
    assert PluginConfig().control_token_file == "/var/openfaas/secrets/quart-control-token"
    # the functions mount it by name: stack.yml's pod-mode switch, as the guide sets it
    assert "QUART_POD_SECRETS='[quart-control-token]'" in guide and stack["functions"]
    assert "secrets: &pod_secrets ${QUART_POD_SECRETS:-[]}" in (REPO / "stack.yml").read_text()
