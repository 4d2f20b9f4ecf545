"""The alert rules and the Grafana dashboard the chart ships: promtool checks and unit-tests the rules,
every alert has a unit test, and every series the rules and panels query is one the operator exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from devstack.tools import promtool
from tests.chart.test_chart_platform import by_kind, render
from vault_sts_operator import metrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vault-sts-operator"
RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("rules_test.yaml")
DASHBOARD = CHART / "files" / "grafana-dashboard.json"


def promtool_binary() -> str:
    binary = promtool()
    assert binary is not None, "promtool is not built: bash devstack/build.sh promtool"
    return str(binary)


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    """Every sample name the operator's metrics module defines (with _total, _bucket, ... suffixes)."""
    metrics.record_build_info()
    names = set()
    for collector in list(REGISTRY._collector_to_names):
        names.update(REGISTRY._collector_to_names[collector])
    return {n for n in names if n.startswith("vault_sts_operator_")}


def test_promtool_check_rules():
    result = subprocess.run([promtool_binary(), "check", "rules", str(RULES)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_for_every_alert():
    result = subprocess.run([promtool_binary(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            check=False, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {case["alertname"] for test in tested for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tested for case in test["alert_rule_test"] if not case["exp_alerts"]}
    names = {a["alert"] for a in alerts()}
    assert firing == names, names ^ firing
    assert quiet == names, names ^ quiet


def test_rules_and_dashboard_query_only_exported_metrics():
    exported = exported_names()
    assert {"vault_sts_operator_credential_ready_status", "vault_sts_operator_build_info",
            "vault_sts_operator_credential_renewal_timestamp_seconds",
            "vault_sts_operator_mfa_session_expiration_timestamp_seconds"} <= exported
    queries = [a["expr"] for a in alerts()]
    dashboard = json.loads(DASHBOARD.read_text())
    queries += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for q in queries for name in re.findall(r"vault_sts_operator_\w+", q)}
    assert used and used <= exported, used - exported


def test_dashboard_covers_what_platform_teams_watch():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Credentials by Ready state", "Time to expiry", "Rotations", "Failures by reason",
                   "MFA codes spent", "MFA session left, per identity"):
        assert wanted in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "vault-sts-operator"


def test_chart_carries_the_rules_and_the_dashboard(tmp_path):
    assert not by_kind(render(), "PrometheusRule") and not by_kind(render(), "ConfigMap")
    docs = render({"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
                               "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                                    "annotations": {"grafana_folder": "AWS"}}}}, tmp_path)
    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"
    (config_map,) = by_kind(docs, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "AWS"}
    assert json.loads(config_map["data"]["vault-sts-operator.json"]) == json.loads(DASHBOARD.read_text())


def test_docs_list_every_alert():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for alert in alerts():
        assert f"`{alert['alert']}`" in doc, alert["alert"]
