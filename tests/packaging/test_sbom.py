"""`make sbom` writes a CycloneDX SBOM of exactly what the image installs: every locked runtime
dependency at its locked version, and this package as the main component."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_sbom_lists_every_locked_runtime_dependency():
    result = subprocess.run(["make", "sbom"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    sbom = json.loads((ROOT / "dist" / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = sbom["metadata"]["component"]
    assert (main["name"], main["version"], main["type"]) == (project["name"], project["version"], "application")
    locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", (ROOT / "requirements" / "operator.lock").read_text(),
                             re.MULTILINE))
    listed = {c["name"].lower(): c["version"] for c in sbom["components"]}
    assert {k.lower(): v for k, v in locked.items()} == listed
    for component in sbom["components"]:
        assert component["purl"] == f"pkg:pypi/{component['name'].lower()}@{component['version']}"
    assert {"aiohttp", "boto3", "hvac", "prometheus-client", "requests"} <= set(listed)
    assert "kopf" not in listed  # retired (issue 18)
