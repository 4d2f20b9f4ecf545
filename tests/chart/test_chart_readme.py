"""The chart README's values table is helm-docs' output, current and complete.

helm-docs (built from the Go module proxy by ``devstack/build.sh helm_docs``) rewrites a copy of the chart
from ``README.md.gotmpl`` and the ``# --`` comments of ``values.yaml``; the committed README must equal it.
helm-docs leaves out a key that has no ``# --`` comment when its parent map has one, so every key of
values.yaml must have a row of its own or a row for one of its parent maps.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.test_chart import CHART

ROOT = CHART.parents[1]
ROW = re.compile(r"^\| (?P<key>[A-Za-z0-9_.]+) \| (?P<type>\w+) \| `(?P<default>.*)` \| (?P<description>.*) \|$")


def helm_docs(chart: Path) -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "chart_readme.sh"), str(chart)], check=True,
                   capture_output=True, text=True, timeout=300)
    return (chart / "README.md").read_text()


def rows(readme: str) -> dict[str, dict[str, str]]:
    table = readme.split("<!-- values-table:start -->", 1)[1].split("<!-- values-table:end -->", 1)[0]
    return {m["key"]: m.groupdict() for line in table.splitlines() if (m := ROW.match(line))}


def leaf_keys(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [k for key, value in values.items() for k in leaf_keys(value, f"{prefix}.{key}" if prefix else key)]
    return [prefix]


def test_readme_is_helm_docs_output(tmp_path):
    copy = tmp_path / "vault-sts-operator"
    shutil.copytree(CHART, copy)
    generated = helm_docs(copy)
    assert generated == (CHART / "README.md").read_text(), "stale chart README: bash scripts/chart_readme.sh"


def test_every_value_has_a_described_row():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = rows((CHART / "README.md").read_text())
    assert len(table) >= 80, len(table)
    for key in leaf_keys(values):
        parts = key.split(".")
        covering = [".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in table]
        assert covering, f"values.yaml key {key} has no row in the chart README"
        assert table[covering[0]]["description"].strip(), f"row {covering[0]} has no description"
    assert table["rbac.scope"]["default"] == '"cluster"' and "namespaced" in table["rbac.scope"]["description"]
    assert table["secretRecovery.clusterMode"]["default"] == '"watch"'
    assert table["secretRecovery.checkIntervalSeconds"]["default"] == "45"
    assert table["metrics.prometheusRule.enabled"]["default"] == "false"
    assert table["replicaCount"]["type"] == "int" and table["replicaCount"]["default"] == "2"


def test_a_changed_default_makes_the_readme_stale(tmp_path):
    copy = tmp_path / "vault-sts-operator"
    shutil.copytree(CHART, copy)
    values = copy / "values.yaml"
    values.write_text(values.read_text().replace("replicaCount: 2", "replicaCount: 3"))
    generated = helm_docs(copy)
    assert generated != (CHART / "README.md").read_text()
    assert rows(generated)["replicaCount"]["default"] == "3"
