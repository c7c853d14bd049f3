"""The shipped alert rule and AlertManager route: valid, and pointed at the plugin's webhook."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from gateway_plugin.app import parse_alert
from tests.conftest import require_tool

ALERTING = Path(__file__).resolve().parents[1] / "gateway_plugin" / "alerting"


def test_rules_pass_promtool():
    cmd = [require_tool("promtool"), "check", "rules", str(ALERTING / "alert.rules.yml")]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 2 rules found" in r.stdout


def test_route_sends_firing_and_resolved_to_the_webhook():
    doc = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    recv = {r["name"]: r for r in doc["receivers"]}[doc["route"]["receiver"]]
    hook = recv["webhook_configs"][0]
    assert hook["url"].endswith("/system/alert") and hook["send_resolved"] is True
    assert "function_name" in doc["route"]["group_by"]


def test_rule_labels_reach_the_parser():
    rule = yaml.safe_load((ALERTING / "alert.rules.yml").read_text())["groups"][0]["rules"][0]
    payload = {"status": "firing", "alerts": [
        {"status": "firing", "labels": {**rule["labels"], "alertname": rule["alert"],
                                        "function_name": "minilm-stage-1.openfaas-fn"}}]}
    assert parse_alert(payload) == ({"minilm-stage-1"}, {"firing": 1, "resolved": 0})


@pytest.mark.parametrize("body, needle", [
    (None, "JSON object"), ({"alerts": "x"}, "non-empty list"), ({"alerts": [1]}, "labels"),
    ({"alerts": [{"labels": {"function_name": ""}}]}, "function_name"),
    ({"alerts": [{"labels": {"function_name": "f"}, "status": "weird"}]}, "status"),
])
def test_malformed_payloads(body, needle):
    with pytest.raises(ValueError, match=needle):
        parse_alert(body)
