"""`make dist` end to end: the release artefacts in dist/, each usable, and SHA256SUMS over exactly them.

Runs the real target (the image comes from `make image`'s cache when the sources are unchanged), then opens
every artefact as a user would: the wheel's console scripts, `helm lint` of the packaged chart, the OCI
archive's index and image config, the SBOM, and `sha256sum -c`.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tomllib
import zipfile
from pathlib import Path

import yaml

from tests.chart.test_chart import helm_binary

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"


def test_make_dist_writes_checked_release_artefacts(tmp_path):
    result = subprocess.run(["make", "--no-print-directory", "dist"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "charts" / "vault-sts-operator" / "Chart.yaml").read_text())
    wheel = f"vault_sts_operator-{version}-py3-none-any.whl"
    chart_tgz = f"vault-sts-operator-{chart['version']}.tgz"
    image = f"vault-sts-operator-image-{chart['appVersion']}.oci.tar"
    assert sorted(p.name for p in DIST.iterdir()) == sorted([wheel, chart_tgz, image, "sbom.cdx.json", "SHA256SUMS"])

    sums = (DIST / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in sums) == sorted([wheel, chart_tgz, image, "sbom.cdx.json"])
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=DIST, capture_output=True, text=True, check=False)
    assert check.returncode == 0 and check.stdout.count(": OK") == 4, check.stdout + check.stderr

    with zipfile.ZipFile(DIST / wheel) as archive:
        entry_points = archive.read(f"vault_sts_operator-{version}.dist-info/entry_points.txt").decode()
    assert "kubectl-vaultsts = vault_sts_operator.ctl.plugin:main" in entry_points
    assert "vault-sts-operator = vault_sts_operator.cli:main" in entry_points

    lint = subprocess.run([helm_binary(), "lint", "--strict", str(DIST / chart_tgz), "--kube-version", "1.35.4"],
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    with tarfile.open(DIST / chart_tgz) as archive:
        names = archive.getnames()
        packaged = yaml.safe_load(archive.extractfile("vault-sts-operator/Chart.yaml").read())
    assert packaged["version"] == chart["version"] and "artifacthub.io/crds" in packaged["annotations"]
    assert "vault-sts-operator/README.md" in names and "vault-sts-operator/README.md.gotmpl" not in names

    with tarfile.open(DIST / image) as archive:
        def blob(digest: str) -> dict:
            return json.loads(archive.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}").read())

        index = json.loads(archive.extractfile("index.json").read())
        (manifest_ref,) = index["manifests"]
        assert manifest_ref["annotations"]["org.opencontainers.image.ref.name"] == \
            f"localhost/vault-sts-operator:{chart['appVersion']}"
        manifest = blob(manifest_ref["digest"])
        config = blob(manifest["config"]["digest"])
        assert len(manifest["layers"]) >= 2
    assert config["config"]["Entrypoint"] == ["vault-sts-operator"]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "vault-sts-operator"

    sbom = json.loads((DIST / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["metadata"]["component"]["version"] == version
