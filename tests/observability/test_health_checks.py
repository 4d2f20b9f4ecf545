"""The states the live e2e test (tests/e2e/test_status_kstatus.py) cannot hold still, judged by the same tools:
cli-utils' kstatus and docs/argocd-health.lua (gopher-lua, as Argo CD runs it), through kstatus-check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.tools import kstatus_check

ROOT = Path(__file__).resolve().parents[2]


def credential(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
                            "metadata": {"name": "app", "namespace": "team", "generation": generation}}
    if status is not None:
        body["status"] = status
    return body


def cond(type_: str, status: str, reason: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": f"{type_} {reason}",
            "lastTransitionTime": "2026-12-04T12:00:00Z"}


READY = cond("Ready", "True", "Issued")


@pytest.mark.parametrize(("body", "expected"), [
    # never seen by the operator: kstatus cannot tell (Current), the script waits
    (credential(1, None), ("Current", "Progressing")),
    # the spec changed, the operator has not written the new generation yet
    (credential(2, {"observedGeneration": 1, "conditions": [READY]}), ("InProgress", "Progressing")),
    # failing (transient) with no valid Secret left: retried, but nothing usable meanwhile
    (credential(1, {"observedGeneration": 1, "conditions": [
        cond("Ready", "False", "Throttled"), cond("RotationFailing", "True", "Throttled"),
        cond("Reconciling", "True", "Throttled")]}), ("InProgress", "Degraded")),
    # recovered after failures: Reconciling and Stalled are gone, RotationFailing False
    (credential(1, {"observedGeneration": 1, "failedAttempts": 0, "lastFailureTime": "2026-12-04T11:00:00Z",
                    "conditions": [READY, cond("RotationFailing", "False", "Succeeded")]}), ("Current", "Healthy")),
    # written by an operator before RotationFailing existed
    (credential(1, {"observedGeneration": 1, "conditions": [READY]}), ("Current", "Healthy")),
])
def test_kstatus_and_argocd_read_the_status(body: dict[str, Any], expected: tuple[str, str]) -> None:
    binary = kstatus_check()
    assert binary is not None, "kstatus-check is not built: bash devstack/build.sh kstatus"
    out = subprocess.run([str(binary), "-lua", str(ROOT / "docs" / "argocd-health.lua")], input=json.dumps(body),
                         capture_output=True, text=True, check=True, timeout=30)
    result = json.loads(out.stdout)
    assert (result["kstatus"], result["argoStatus"]) == expected, result
    assert result["argoMessage"]
