"""deploy/: the alert path on Kubernetes (Prometheus rule -> AlertManager route -> the
plugin's POST /system/alert) and the scrape jobs, checked with the real tools (amtool,
promtool), and the generated ConfigMaps are what deploy/generate.py makes from their
sources (gateway_plugin/alerting/, deploy/prometheus/)."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import yaml

from local_provider import prometheus, services
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "kubernetes"


def generator():
    spec = importlib.util.spec_from_file_location("deploy_generate", REPO / "deploy" /
                                                  "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def configmap(name: str) -> dict[str, str]:
    return next(d for f in K8S.glob("*.yaml") for d in docs(f.name)
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)["data"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_generated_configmaps_are_current():
    g = generator()
    assert (K8S / "41-alertmanager-config.yaml").read_text() == g.alertmanager_config()
    assert (K8S / "50-prometheus-config.yaml").read_text() == g.prometheus_config()
    # and carry their sources verbatim (only the webhook host differs)
    rules = (REPO / "gateway_plugin" / "alerting" / "alert.rules.yml").read_text()
    assert configmap("quart-prometheus")["quart.rules.yml"] == rules
    scrape = (REPO / "deploy" / "prometheus" / "scrape-configs.yml").read_text()
    assert configmap("quart-prometheus")["scrape-configs.yml"] == scrape
    route = (REPO / "gateway_plugin" / "alerting" / "alertmanager.yml").read_text()
    assert configmap("quart-alertmanager-config")["alertmanager.yml"] == \
        route.replace(g.LOCAL_WEBHOOK, g.CLUSTER_WEBHOOK)


def test_generator_refuses_a_route_it_cannot_point(tmp_path, monkeypatch):
    g = generator()
    (tmp_path / "alertmanager.yml").write_text("route: {receiver: x}\nreceivers: [{name: x}]\n")
    monkeypatch.setattr(g, "ALERTING", tmp_path)
    with pytest.raises(SystemExit, match="exactly once"):
        g.alertmanager_config()


def test_webhook_reaches_the_plugin_service():
    am = yaml.safe_load(configmap("quart-alertmanager-config")["alertmanager.yml"])
    hooks = [h for r in am["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks
    svc = next(d for d in docs("20-gateway-plugin.yaml") if d["kind"] == "Service")
    for h in hooks:
        u = urlparse(h["url"])
        assert u.hostname == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}"
        assert u.port == svc["spec"]["ports"][0]["port"] and u.path == "/system/alert"
        assert h["send_resolved"] is True
    # the OpenFaaS chart's Prometheus sends alerts to alertmanager:9093 in its namespace
    am_svc = next(d for d in docs("40-alertmanager.yaml") if d["kind"] == "Service")
    assert (am_svc["metadata"]["name"], am_svc["metadata"]["namespace"],
            am_svc["spec"]["ports"][0]["port"]) == ("alertmanager", "openfaas", 9093)
    dep = next(d for d in docs("40-alertmanager.yaml") if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"] == \
        "quart-alertmanager-config"
    args = pod["containers"][0]["args"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert f"--config.file={mount['mountPath']}/alertmanager.yml" in args
    # the plugin's webhook takes the gateway's credentials: the password file the route
    # names lies in the chart's basic-auth Secret, mounted into this pod
    secret = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    for h in hooks:
        basic = h["http_config"]["basic_auth"]
        folder, _, key = basic["password_file"].rpartition("/")
        assert basic["username"] == "admin" and key == "basic-auth-password"
        assert secret[mounts[folder]] == "basic-auth"


def test_alertmanager_config_passes_amtool_and_routes_to_the_plugin(tmp_path):
    amtool = require_tool("amtool")
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(configmap("quart-alertmanager-config")["alertmanager.yml"])
    r = run([amtool, "check-config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    # the labels of both rules, and of the OpenFaaS chart's own APIHighInvocationRate
    rules = yaml.safe_load(configmap("quart-prometheus")["quart.rules.yml"])
    for rule in rules["groups"][0]["rules"]:
        labels = [f"{k}={v}" for k, v in rule["labels"].items()]
        r = run([amtool, "config", "routes", "test", f"--config.file={cfg}",
                 f"alertname={rule['alert']}", "function_name=minilm-stage-1.openfaas-fn",
                 *labels])
        assert r.returncode == 0 and r.stdout.strip() == "quart-plugin", r.stdout + r.stderr


def test_amtool_rejects_a_broken_route(tmp_path):
    """The check above can fail: a route naming a receiver that does not exist."""
    amtool = require_tool("amtool")
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(configmap("quart-alertmanager-config")["alertmanager.yml"].replace(
        "receiver: quart-plugin", "receiver: nobody", 1))
    assert run([amtool, "check-config", str(cfg)]).returncode != 0


def _prometheus_yml(tmp_path: Path, scrape: str, sd_file: Path | None = None) -> Path:
    """A full prometheus.yml around the scrape jobs and the rules.  Debian's Prometheus is
    built without Kubernetes discovery, so ``sd_file`` swaps each job's kubernetes_sd_configs
    for a file_sd_configs that lists what pod discovery would find; the relabeling, which is
    what we wrote, runs unchanged."""
    (tmp_path / "quart.rules.yml").write_text(configmap("quart-prometheus")["quart.rules.yml"])
    jobs = yaml.safe_load(scrape)["scrape_configs"]
    for j in jobs:
        sd = j.pop("kubernetes_sd_configs")
        assert sd == [{"role": "pod", "namespaces": {"names": ["openfaas"]}}]
        j["file_sd_configs"] = [{"files": [str(sd_file or tmp_path / "pods.json")]}]
    cfg = {"global": {"scrape_interval": "1h"}, "rule_files": ["quart.rules.yml"],
           "alerting": {"alertmanagers": [{"static_configs": [
               {"targets": ["alertmanager.openfaas:9093"]}]}]},
           "scrape_configs": jobs}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _discovered_pods() -> list[dict]:
    """Kubernetes pod discovery's target groups for our pods, one per container port, built
    from the manifests (pod labels, port names), plus the OpenFaaS gateway's pod, which no
    job of ours may keep.  Addresses on loopback: nothing listens there."""
    pods = []
    for i, (file, kind) in enumerate([("20-gateway-plugin.yaml", "Deployment"),
                                      ("30-keys-manager.yaml", "DaemonSet")]):
        w = next(d for d in docs(file) if d["kind"] == kind)
        tmpl = w["spec"]["template"]
        for c in tmpl["spec"]["containers"]:
            for port in c["ports"]:
                pods.append((f"{w['metadata']['name']}-{i}", tmpl["metadata"]["labels"],
                             port["name"], port["containerPort"]))
    pods.append(("gateway-7d9f", {"app": "gateway"}, "http", 8080))
    groups = []
    for n, (pod, labels, port_name, port) in enumerate(pods):
        # discovery's label names: every character outside [a-zA-Z0-9_] becomes _
        meta = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
                for k, v in labels.items()}
        groups.append({"targets": [f"127.0.0.{10 + n}:{port}"], "labels": {
            **meta, "__meta_kubernetes_namespace": "openfaas",
            "__meta_kubernetes_pod_name": pod, "__meta_kubernetes_pod_node_name": f"node-{n}",
            "__meta_kubernetes_pod_container_port_name": port_name}})
    return groups


def test_scrape_jobs_and_rules_pass_promtool(tmp_path):
    promtool = require_tool("promtool")
    r = run([promtool, "check", "config",
             str(_prometheus_yml(tmp_path, configmap("quart-prometheus")["scrape-configs.yml"]))])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 2 rules found" in r.stdout + r.stderr


def test_promtool_rejects_a_broken_scrape_job(tmp_path):
    promtool = require_tool("promtool")
    scrape = configmap("quart-prometheus")["scrape-configs.yml"].replace("action: keep",
                                                                          "action: kept", 1)
    r = run([promtool, "check", "config", str(_prometheus_yml(tmp_path, scrape))])
    assert r.returncode != 0


def test_scrape_jobs_keep_exactly_our_metrics_ports(tmp_path):
    """A real Prometheus relabels what pod discovery would find: each job keeps the one
    metrics port of its own pods, labelled with pod and node, and drops everything else."""
    require_tool("prometheus")
    sd = tmp_path / "pods.json"
    sd.write_text(json.dumps(_discovered_pods()))
    cfg = _prometheus_yml(tmp_path, configmap("quart-prometheus")["scrape-configs.yml"], sd)
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    svc = services.start(tmp_path, "prometheus", [
        prometheus.binary(), f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], url)
    try:
        assert services.wait_http(f"{url}/-/ready", 60, lambda: services.pid_alive(svc.pid))
        deadline, active = time.monotonic() + 30, []
        while time.monotonic() < deadline and len(active) < 2:
            active = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"][
                "activeTargets"]
            time.sleep(0.2)
    finally:
        services.stop(tmp_path, svc)
    got = sorted((t["labels"]["job"], t["labels"]["instance"].rsplit(":", 1)[1],
                  t["labels"]["pod"], t["labels"]["node"].startswith("node-")) for t in active)
    assert got == [("quart-gateway-plugin", "8084", "quart-gateway-plugin-0", True),
                   ("quart-keys-manager", "8083", "quart-keys-manager-1", True)]
