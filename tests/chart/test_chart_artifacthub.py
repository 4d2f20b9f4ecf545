"""Chart.yaml's release metadata: helm lint, and the Artifact Hub annotations parse and say true things.

The annotations are YAML inside strings, which neither helm nor any schema reads: a typo would only show on
Artifact Hub. Here each one is parsed; the CRD list names exactly the chart's CRDs; the examples are
docs/examples' objects and the real apiserver accepts them (server-side dry run against the CRDs).
"""

from __future__ import annotations

import json
import subprocess
import tomllib

import yaml

from tests.chart.test_chart import CHART, helm_binary
from tests.e2e.helpers import kubectl

ROOT = CHART.parents[1]
CAPABILITIES = {"Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot"}


def chart_yaml() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def annotation(name: str) -> object:
    return yaml.safe_load(chart_yaml()["annotations"][f"artifacthub.io/{name}"])


def chart_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted((CHART / "files" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def test_helm_lint_strict_passes_with_the_metadata():
    result = subprocess.run([helm_binary(), "lint", "--strict", str(CHART), "--kube-version", "1.35.4"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert chart_yaml()["maintainers"][0]["name"]


def test_artifacthub_scalars():
    annotations = chart_yaml()["annotations"]
    license_ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert annotations["artifacthub.io/license"] == license_
    assert annotations["artifacthub.io/operator"] == "true"
    assert annotations["artifacthub.io/operatorCapabilities"] in CAPABILITIES
    assert annotations["artifacthub.io/prerelease"] == "true"  # every CRD version is an alpha
    assert all(v["name"].startswith("v1alpha") for crd in chart_crds().values() for v in crd["spec"]["versions"])


def test_artifacthub_images_name_the_app_version():
    images = annotation("images")
    assert images == [{"name": "vault-sts-operator", "image": f"vault-sts-operator:{chart_yaml()['appVersion']}"}]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images[0]["image"].split(":")[0] == values["image"]["repository"]


def test_artifacthub_crds_list_both_kinds():
    listed = annotation("crds")
    assert isinstance(listed, list)
    crds = chart_crds()
    assert sorted(item["kind"] for item in listed) == sorted(crds) == ["AssumedRoleCredential", "MFAIdentity"]
    for item in listed:
        crd = crds[item["kind"]]
        assert item["name"] == crd["metadata"]["name"]
        assert item["version"] in [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
        assert item["displayName"] and len(item["description"]) > 40


def test_artifacthub_crd_examples_are_the_docs_examples(stack, crds):
    examples = annotation("crdsExamples")
    assert isinstance(examples, list)
    assert sorted(e["kind"] for e in examples) == sorted(chart_crds())
    docs = {doc["kind"]: doc for name in ("mfaidentity.yaml", "assumedrolecredential.yaml")
            for doc in [yaml.safe_load((ROOT / "docs" / "examples" / name).read_text())]}
    for example in examples:
        assert example == docs[example["kind"]], example["kind"]
        # The real apiserver validates each against its CRD's schema and CEL rules, creating nothing.
        candidate = json.loads(json.dumps(example))
        candidate["metadata"]["name"] = f"artifacthub-example-{candidate['metadata']['name']}"
        if "namespace" in candidate["metadata"]:
            candidate["metadata"]["namespace"] = "default"
        result = kubectl(stack, "create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(candidate),
                         check=False)
        assert result.returncode == 0, (example["kind"], result.stderr)
    # A broken example is refused, so the dry run checks something.
    broken = json.loads(json.dumps(examples[0]))
    broken["metadata"]["name"] = "artifacthub-example-broken"
    broken["spec"] = {"nonsense": True}
    refused = kubectl(stack, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(broken), check=False)
    assert refused.returncode != 0
