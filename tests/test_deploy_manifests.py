"""deploy/: every Kubernetes manifest, plain and rendered through kustomize, validates against
the Kubernetes API schemas (kubernetes-validate, strict), follows the security rules we
promise (non-root, read-only root, no API token), and keys_manager's settings and the
function patches agree with what the code reads.  The plugin's settings and API access:
test_deploy_plugin_access.py."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from gateway_plugin.config import PluginConfig
from keys_manager.config import AgentConfig
from keys_manager.threshold import parse_threshold
from tests.k8s_manifests import (
    DEPLOY,
    GIB,
    KUSTOMIZATIONS,
    PLAIN,
    REPO,
    VERSIONS,
    WORKLOADS,
    container,
    env_of,
    find,
    load,
    quantity,
    render,
    render_all,
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return render_all()


# ------------------------------------------------------------------ schema validation

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", PLAIN, ids=lambda p: p.name)
def test_plain_manifests_validate(path, version):
    docs = load(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", [n for n in KUSTOMIZATIONS if n != "base"])
def test_rendered_overlays_validate(rendered, name):
    """The overlays as kustomize renders them (the base renders to the plain files exactly:
    test_base_is_the_plain_manifests)."""
    for doc in rendered[name]:
        kubernetes_validate.validate(doc, VERSIONS[0], strict=True)


@pytest.mark.parametrize("breakage", ["replicas", "unknown_field", "probe_port"])
def test_validation_rejects_a_broken_manifest(breakage):
    """The check above can fail: a wrong type, an unknown field, a port that is no port."""
    dep = copy.deepcopy(find(load(DEPLOY / "kubernetes" / "20-gateway-plugin.yaml"),
                             "Deployment", "quart-gateway-plugin"))
    c = container(dep, "plugin")
    if breakage == "replicas":
        dep["spec"]["replicas"] = "two"
    elif breakage == "unknown_field":
        c["readinessProbes"] = c.pop("readinessProbe")
    else:
        c["livenessProbe"]["httpGet"]["port"] = [8084]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, VERSIONS[0], strict=True)


def test_base_is_the_plain_manifests(rendered):
    """`kubectl apply -f deploy/kubernetes/` and `-k deploy/kubernetes` install the same
    objects, and no plain file is left out of the kustomization."""
    plain = [d for p in PLAIN for d in load(p)]
    def key(d: dict) -> tuple[str, str, str]:
        return d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]

    assert sorted(map(key, plain)) == sorted(map(key, rendered["base"]))
    by_key = {key(d): d for d in rendered["base"]}
    for d in plain:
        assert by_key[key(d)] == d, key(d)


def test_overlays_change_what_they_say(rendered):
    big, ext = rendered["big-nodes"], rendered["external-redis"]
    assert find(big, "Deployment", "quart-gateway-plugin")["spec"]["replicas"] == 3
    ours = [c["image"] for d in big if d["kind"] in WORKLOADS
            for c in d["spec"]["template"]["spec"]["containers"]
            + d["spec"]["template"]["spec"].get("initContainers", []) if "quart-faas" in c["image"]]
    assert len(ours) == 3 and {i.split("/")[0] for i in ours} == {"registry.example.com"}
    assert not [d for d in ext if d["metadata"]["name"] == "quart-redis"]
    env = container(find(ext, "Deployment", "quart-gateway-plugin"), "plugin")["env"]
    url = next(e for e in env if e["name"] == "REDIS_URL")
    assert url == {"name": "REDIS_URL",
                   "valueFrom": {"secretKeyRef": {"name": "quart-redis", "key": "url"}}}
    assert "REDIS_PASSWORD" not in {e["name"] for e in env}


# ------------------------------------------------------------------ security

PLUGIN_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch"]}]


def api_tokens(pod: dict) -> list[str]:
    """Volumes of a pod spec that carry a Kubernetes API token."""
    return [v["name"] for v in pod.get("volumes", [])
            for src in v.get("projected", {}).get("sources", []) if "serviceAccountToken" in src]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_pod_is_locked_down(rendered, name):
    docs = rendered[name]
    # one Role, in the function namespace, with exactly what the kubernetes actuator calls,
    # bound to the plugin alone; nothing cluster-wide
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "openfaas-fn"
    assert role["rules"] == PLUGIN_RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "quart-gateway-plugin",
                                    "namespace": "openfaas"}]
    assert {d["metadata"]["namespace"] for d in docs
            if d["kind"] not in ("Namespace", "Role", "RoleBinding")} == {"openfaas"}
    for sa in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert workloads
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        who = f"{w['kind']}/{w['metadata']['name']}"
        assert pod["automountServiceAccountToken"] is False, who
        # an API token only where the Role is bound, and only in the container that uses it
        if w["metadata"]["name"] == "quart-gateway-plugin":
            (vol,) = api_tokens(pod)
            (mount,) = [m for c in pod["containers"] + pod.get("initContainers", [])
                        for m in c.get("volumeMounts", []) if m["name"] == vol]
            assert mount == {"name": vol, "readOnly": True,
                             "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
        else:
            assert api_tokens(pod) == [], who
        assert pod["securityContext"]["runAsNonRoot"] is True, who
        assert pod["securityContext"]["runAsUser"] > 0, who
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, who
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (who, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (who, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (who, c["name"])
            assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), (who, c["name"])
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), (who, c["name"])
            image = c["image"].rsplit("/", 1)[-1]
            assert ":" in image and not image.endswith(":latest"), c["image"]
            if c in pod.get("initContainers", []):
                # the one root step: chown of the hostPath directories, nothing else
                assert sc["runAsUser"] == 0 and sc["capabilities"]["add"] == ["CHOWN", "FOWNER"]
            else:
                assert sc.get("runAsUser", 1) != 0 and "add" not in sc["capabilities"]
        for c in pod["containers"]:
            assert "livenessProbe" in c and "readinessProbe" in c, (who, c["name"])


# ------------------------------------------------------------------ keys_manager

def _template_uid() -> int:
    docker = (REPO / "template" / "quart-python" / "Dockerfile").read_text()
    return int(re.search(r"adduser --system --uid (\d+)", docker)[1])


@pytest.mark.parametrize("name", ["base", "big-nodes"])
def test_keys_manager_limits_follow_the_threshold(rendered, name):
    ds = find(rendered[name], "DaemonSet", "quart-keys-manager")
    c = container(ds, "keys-manager")
    env = env_of(c, {}, {})
    cfg = AgentConfig.from_env(env)
    threshold = parse_threshold(env["QUART_MEMORY_THRESHOLD"], 0)  # bytes, never a fraction
    assert cfg.memory_threshold_bytes == threshold
    limit = quantity(c["resources"]["limits"]["memory"])
    # T1 pages are charged to this container: the cache plus 1 GiB for the process
    assert limit >= threshold + GIB
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
    # the plugin places replicas with the same per-node budget
    plugin_cm = find(rendered[name], "ConfigMap", "quart-gateway-plugin")["data"]
    assert parse_threshold(plugin_cm["QUART_MEMORY_THRESHOLD"], 0) == threshold


def test_keys_manager_shares_its_node_paths(rendered):
    ds = find(rendered["base"], "DaemonSet", "quart-keys-manager")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds, "keys-manager")
    cfg = AgentConfig.from_env(env_of(c, {}, {}))
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}

    def volume_of(path: Path) -> tuple[str, Path]:
        for mp, vol in mounts.items():
            if path == Path(mp) or Path(mp) in path.parents:
                return vol, path.relative_to(mp)
        raise AssertionError(f"{path} is on no volume")

    # socket, T1 and T2 on hostPath volumes: function pods on the node can mount them
    for path in (cfg.socket.parent, cfg.shm_dir, cfg.disk_dir):
        vol, _ = volume_of(path)
        assert vol in host, path
    # T1 under /dev/shm (tmpfs) and in a subdirectory: the agent removes it on shutdown
    vol, rel = volume_of(cfg.shm_dir)
    assert host[vol].startswith("/dev/shm/") and rel != Path(".")
    # metrics: bound for Prometheus on the port the probes and the annotation use
    assert cfg.metrics_bind == "0.0.0.0"
    port = next(p for p in c["ports"] if p["name"] == "metrics")["containerPort"]
    assert cfg.metrics_port == port == 8083
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io.port"] == str(port)
    # the uid function containers run as (template image, faas-netes setNonRootUser)
    assert pod["securityContext"]["runAsUser"] == _template_uid() == 12000
    # the root init step hands exactly those directories to the agent's uid
    init = pod["initContainers"][0]
    owned = {volume_of(p)[0] for p in (cfg.socket.parent, cfg.shm_dir, cfg.disk_dir)}
    assert {m["name"] for m in init["volumeMounts"]} == owned
    script = init["command"][-1]
    assert all(m["mountPath"] in script for m in init["volumeMounts"])
    assert f"os.chown(d, {_template_uid()}, {_template_uid()})" in script


def faas_netes_deployment(fn: str) -> dict:
    """A function's Deployment shaped as faas-netes creates it (one container, port 8080)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": fn, "namespace": "openfaas-fn", "labels": {"faas_function": fn}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"faas_function": fn}},
                 "template": {
                     "metadata": {"labels": {"faas_function": fn}},
                     "spec": {"containers": [{
                         "name": fn, "image": "ttl.sh/quart-faas/minilm-stage:0.1.0",
                         "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                         "readinessProbe": {"httpGet": {"path": "/_/health", "port": 8080}},
                         "securityContext": {"readOnlyRootFilesystem": False}}]}}}}


def patched(tmp_path: Path, deployment: dict, patch_name: str) -> dict:
    """deploy/patches/PATCH_NAME applied by kustomize, then validated strictly."""
    fn = deployment["metadata"]["name"]
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    patch = (DEPLOY / "patches" / patch_name).read_text()
    (tmp_path / "patch.yaml").write_text(patch.replace("FUNCTION_NAME", fn))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": ["deployment.yaml"],
         "patches": [{"path": "patch.yaml"}]}))
    (out,) = render(tmp_path)
    for version in VERSIONS:
        kubernetes_validate.validate(out, version, strict=True)
    return out


def test_function_control_port_patch_adds_the_port_and_keeps_8080(tmp_path):
    """The pod-mode control port, declared beside faas-netes' port, at the port the
    template serves it on and the plugin calls by default."""
    deployment = faas_netes_deployment("minilm-stage-1")
    out = patched(tmp_path, deployment, "function-control-port.yaml")
    (c,) = out["spec"]["template"]["spec"]["containers"]
    assert c["ports"] == [{"containerPort": 8082, "name": "quart-control", "protocol": "TCP"},
                          {"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    assert c["readinessProbe"] == deployment["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"]
    cfg_src = (REPO / "template" / "quart-python" / "quart_pod" / "config.py").read_text()
    assert "CONTROL_PORT = 8082" in cfg_src and PluginConfig().pod_control_port == 8082


def test_function_patch_mounts_the_same_node_paths(rendered, tmp_path):
    """deploy/patches/function-node-cache.yaml applied, by kustomize, to a Deployment shaped
    like the one faas-netes creates for a function: still valid, and it mounts the socket
    directory and T1 read-only from the DaemonSet's host paths."""
    deployment = faas_netes_deployment("minilm-stage-0")
    out = patched(tmp_path, deployment, "function-node-cache.yaml")
    pod = out["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    ds = find(rendered["base"], "DaemonSet", "quart-keys-manager")
    ds_host = {v["name"]: v["hostPath"]["path"]
               for v in ds["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
    ds_mount = {m["name"]: m["mountPath"] for m in container(ds, "keys-manager")["volumeMounts"]}
    fn_host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    fn_mount = {m["name"]: m for m in c["volumeMounts"]}
    # the socket directory and T1, nothing else of the node (not T2, not the models)
    assert sorted(h["path"] for h in fn_host.values()) == sorted([ds_host["run"],
                                                                  ds_host["shm"]])
    for name, h in fn_host.items():
        ds_name = next(n for n, p in ds_host.items() if p == h["path"])
        # the same path inside both containers: paths the agent hands out mean the same
        assert fn_mount[name]["mountPath"] == ds_mount[ds_name]
        assert fn_mount[name]["readOnly"] is True
        # a node without the agent's directories fails the pod instead of getting empty ones
        assert h["type"] == "Directory"


