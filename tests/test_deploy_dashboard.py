"""deploy/grafana/quart-faas.json: valid dashboard JSON (panels, targets, datasource, unique
ids, a grid without overlaps), and every PromQL expression in it, with Grafana's variables
substituted, is accepted by a real Prometheus that scrapes the metrics our code exports
(the plugin's, keys_manager's and the gateway's, from their real registries): each query
answers `success`, names only metrics that exist, and returns series wherever its metrics
have samples."""
from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client import generate_latest

from gateway_plugin.plugin_metrics import PluginMetrics
from keys_manager.agent import KeysManager
from keys_manager.config import AgentConfig
from keys_manager.metrics import AgentMetrics
from local_provider import prometheus, services
from local_provider.metrics import FunctionGauges, GatewayMetrics, function_label
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "quart-faas.json"
STAGES = ["minilm-stage-0", "minilm-stage-1"]
# what Grafana puts in place of its variables: a multi-value $function as a regex
# alternation, the interval variables as durations
GRAFANA_VARS = {"$function": "|".join(STAGES), "$__rate_interval": "10s", "$__interval": "1s",
                "$__range": "1m"}
METRIC = re.compile(r"\b(?:gateway|quart)_[a-z0-9_]+\b")


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(dash: dict) -> list[tuple[str, str]]:
    return [(f"{p['title']}/{t['refId']}", t["expr"]) for p in dash["panels"]
            for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(var, GRAFANA_VARS[var])
    assert "$" not in expr, f"unknown Grafana variable left in {expr}"
    return expr


# ------------------------------------------------------------------ the JSON model

def test_dashboard_is_what_the_generator_builds():
    spec = importlib.util.spec_from_file_location("deploy_generate",
                                                  REPO / "deploy" / "generate.py")
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    assert DASHBOARD.read_text() == json.dumps(g.dashboard(), indent=2) + "\n", \
        "stale: run python deploy/generate.py"


def test_dashboard_model():
    d = load()
    assert d["title"] and d["uid"] == "quart-faas" and isinstance(d["schemaVersion"], int)
    assert d["time"] == {"from": "now-1h", "to": "now"}
    var = {v["name"]: v for v in d["templating"]["list"]}
    assert var["datasource"]["type"] == "datasource" and var["datasource"]["query"] == \
        "prometheus"
    # the import step of docs/cluster.md asks for the data source: one input, and every
    # ${DS_...} reference in the JSON names a declared input (Grafana replaces exactly those)
    (inp,) = d["__inputs"]
    assert (inp["type"], inp["pluginId"]) == ("datasource", "prometheus")
    text = DASHBOARD.read_text()
    assert set(re.findall(r"\$\{(DS_[A-Z_]+)\}", text)) == {inp["name"]}
    assert var["datasource"]["current"]["value"] == "${" + inp["name"] + "}"
    required = {(r["type"], r["id"]) for r in d["__requires"]}
    assert {("datasource", "prometheus"), ("grafana", "grafana")} <= required
    assert {("panel", p["type"]) for p in d["panels"] if p["type"] != "row"} <= required
    assert var["function"]["type"] == "query" and var["function"]["multi"] is True
    assert var["function"]["includeAll"] is True and var["function"]["allValue"] == ".+"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: dict[tuple[int, int], int] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} == g.keys() and all(isinstance(v, int) for v in g.values())
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat") and p["title"] and p["description"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["fieldConfig"]["defaults"]["unit"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip()
    # the panels the issue asks for
    titles = " | ".join(p["title"] for p in d["panels"])
    for want in ("Arrival rate", "p99 latency vs stage budget", "Replicas: desired vs actual",
                 "Arrival CV: predicted", "CPU allocation", "Spawns by tier",
                 "Spawn latency by tier", "Cache bytes per tier"):
        assert want in titles, want


# ------------------------------------------------------------------ against Prometheus

class Exporter:
    """Our real metric registries, fed a steady trickle of activity, on one /metrics."""

    def __init__(self, tmp: Path) -> None:
        self.plugin = PluginMetrics()
        self.gateway = GatewayMetrics(lambda: {function_label(s): FunctionGauges(2, 3, 1, 4)
                                               for s in STAGES})
        cfg = AgentConfig(socket=tmp / "km.sock", keys_dir=tmp / "keys", shm_dir=tmp / "shm",
                          memory_threshold_bytes=1 << 30)
        self.agent = KeysManager(cfg)
        self.keys = AgentMetrics()
        self.keys.attach(self.agent)
        self.stop = threading.Event()
        exporter = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.http.server_address[1]
        self.threads = [threading.Thread(target=self.http.serve_forever, daemon=True),
                        threading.Thread(target=self._activity, daemon=True)]
        for t in self.threads:
            t.start()

    def text(self) -> str:
        return (generate_latest(self.plugin.registry).decode() + self.gateway.render()
                + generate_latest(self.keys.registry).decode())

    def _activity(self) -> None:
        p, i = self.plugin, 0
        p.leader.set(1)
        p.redis_up.set(1)
        p.prometheus_up.set(1)
        p.gat_mae.labels(predictor="gat").set(0.12)
        while not self.stop.wait(0.05):
            i += 1
            for k, s in enumerate(STAGES):
                fn = function_label(s)
                self.gateway.started(fn)
                self.gateway.computed(fn, 0.01 * (k + 1))
                self.gateway.finished(fn, 200 if i % 7 else 500, 0.02 * (1 + i % 5))
                p.observe_stage(s, 3, 2, 0.8 + 0.1 * k, 0.25, 1.5)
                p.decided("corrector", "up" if i % 3 else "steady")
            p.cycle.observe(0.004)
            p.alerts.labels(status="firing").inc()
            self.keys.observe_spawn("T0", 0.003)
            self.keys.observe_spawn("T1", 0.04)

    def close(self) -> None:
        self.stop.set()
        self.http.shutdown()
        self.http.server_close()
        self.agent.shutdown()


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    """(Prometheus URL, the exporter's exposition text) once Prometheus has a few scrapes."""
    require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("dash")
    exp = Exporter(tmp)
    port = services.free_port()
    svc = prometheus.start(tmp, port, {"quart": [f"127.0.0.1:{exp.port}"]},
                           scrape_interval_s=1)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = query(url, "count_over_time(quart_plugin_leader[1m])")
            if r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 4:
                break
            time.sleep(0.3)
        else:
            pytest.fail("Prometheus did not scrape the exporter 4 times in 30 s")
        yield url, exp.text()
    finally:
        services.stop(tmp, svc)
        exp.close()


def query(url: str, expr: str) -> dict:
    return requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()


def exported_names(text: str) -> tuple[set[str], set[str]]:
    """(every series name a scrape of ``text`` can have, the names that have samples)."""
    names, sampled = set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total")
            names |= {"counter": {name, base + "_total", base + "_created"},
                      "histogram": {name + s for s in ("_bucket", "_count", "_sum",
                                                       "_created")}}.get(kind, {name})
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names | sampled, sampled


def problems(url: str, text: str, exprs: list[tuple[str, str]]) -> list[str]:
    names, sampled = exported_names(text)
    out = []
    for where, expr in exprs:
        q = substitute(expr)
        unknown = set(METRIC.findall(q)) - names
        if unknown:
            out.append(f"{where}: metrics our code does not export: {sorted(unknown)}")
            continue
        r = query(url, q)
        if r.get("status") != "success":
            out.append(f"{where}: {r.get('errorType')}: {r.get('error')}")
        elif set(METRIC.findall(q)) <= sampled and not r["data"]["result"]:
            out.append(f"{where}: no series, although every metric it reads has samples")
    return out


def test_every_panel_query_runs_on_prometheus(prom):
    url, text = prom
    exprs = targets(load())
    assert len(exprs) >= 20
    assert problems(url, text, exprs) == []
    # the checks were real: most queries returned series from our registries
    answered = [w for w, e in exprs if query(url, substitute(e))["data"]["result"]]
    assert len(answered) >= len(exprs) - 4, {w for w, _ in exprs} - set(answered)


def test_stage_variable_matches_bare_and_namespaced_names(prom):
    url, _ = prom
    expr = dict(targets(load()))["p99 latency vs stage budget/A"]
    got = {r["metric"]["function_name"] for r in query(url, substitute(expr))["data"]["result"]}
    assert got == {function_label(s) for s in STAGES}  # the gateway's name.namespace
    expr = dict(targets(load()))["p99 latency vs stage budget/B"]
    got = {r["metric"]["function_name"] for r in query(url, substitute(expr))["data"]["result"]}
    assert got == set(STAGES)  # the plugin's bare names, read from the leader only
    assert {float(r["value"][1]) for r in query(url, substitute(expr))["data"]["result"]} == \
        {0.25}


@pytest.mark.parametrize("broken, why", [
    ("sum by (function_name (rate(gateway_function_invocation_started[$__rate_interval]))",
     "bad_data"),
    ("rate(gateway_function_invocation_started{function_name=~\"($function\"}[5m])",
     "bad_data"),
    ("sum(rate(quart_plugin_desired_replica[$__rate_interval]))", "does not export"),
    ("max by (function_name) (quart_keys_cache_bytes{tier=\"T9\"})", "no series"),
])
def test_a_broken_expression_fails_the_check(prom, broken, why):
    url, text = prom
    (problem,) = problems(url, text, [("broken/A", broken)])
    assert why in problem
