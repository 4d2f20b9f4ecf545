"""How Flux (kstatus) and Argo CD (docs/argocd-health.lua) read live AssumedRoleCredentials in each state.

Five credentials on one identity, each in a state a GitOps tool must tell apart; every live object goes through
kstatus-check (devstack/kstatus: cli-utils' status.Compute, and the Lua health check run by gopher-lua as Argo CD
runs it):

- ready: issued, nothing failing                         -> Current,    Healthy
- issuing: the first issue under way (AssumeRole slowed) -> InProgress, Progressing
- failing: a rotation throttled, the Secret still valid  -> InProgress, Progressing (Ready stays True)
- revoked: its role taken off the allow-list after issue -> Failed,     Degraded   (Ready stays True, Stalled)
- invalid: a role never allowed                          -> Failed,     Degraded   (Ready False, Stalled)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.seed import RoleSpec, seed_identity
from devstack.tools import kstatus_check
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.usefixtures("operator")
ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "docs" / "argocd-health.lua"
SLOW_SECONDS = 12.0  # the issuing credential's AssumeRole answer is held this long (the client waits 20 s)


def judge(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    binary = kstatus_check()
    assert binary is not None, "kstatus-check is not built: bash devstack/build.sh kstatus"
    out = subprocess.run([str(binary), "-lua", str(HEALTH_LUA)], input="\n".join(json.dumps(o) for o in objects),
                         capture_output=True, text=True, check=True, timeout=30)
    return [json.loads(line) for line in out.stdout.splitlines()]


def conditions(body: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: f"{c['status']} ({c['reason']})" for c in (body.get("status") or {}).get("conditions") or ()}


def test_gitops_tools_tell_the_states_apart(stack, kube, unique, emulator_admin, issued) -> None:
    team = kube.namespace(f"kstatus-{unique}")
    roles = [RoleSpec(f"app-kstatus-{i}-{unique}") for i in range(4)]
    seeded = seed_identity(stack, f"kstatus-{unique}", roles=roles)
    ok_role, failing_role, issuing_role, revoked_role = seeded.role_arns
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    for name, role in (("ready", ok_role), ("failing", failing_role), ("revoked", revoked_role)):
        kube.create_credential(assumed_role_credential(team, name, seeded.name, role))
    kube.create_credential(assumed_role_credential(team, "invalid", seeded.name,
                                                   "arn:aws:iam::123456789012:role/never-allowed"))
    for name in ("ready", "failing", "revoked"):
        kube.wait_ready(team, name)
        issued.add_secret(kube.secret(team, name))
    observed: dict[str, dict[str, Any]] = {}
    try:
        # failing: every AssumeRole for its role throttled, then a rotation requested
        emulator_admin.add_fault("throttle", action="AssumeRole", target=failing_role)
        kube.patch_credential(team, "failing", {"metadata": {"annotations": {"vaultsts.io/rotate": "now"}}})
        failing = kube.wait_reason(team, "failing", "Throttled", ready=True, timeout=30)
        assert "next attempt at" in failing["message"], failing
        # revoked: the identity no longer allows its role (the Secret issued for it stays valid)
        kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team],
                                         allowed_role_arns=[ok_role, failing_role, issuing_role]))
        kube.wait_reason(team, "revoked", "NotAllowed", ready=True, timeout=30)
        kube.wait_reason(team, "invalid", "NotAllowed", ready=False, timeout=30)
        # issuing: AssumeRole for its role answers after SLOW_SECONDS; a first issue under way for longer than
        # the reconciler's ISSUING_REPORT_SECONDS (2 s) is reported, and caught here while it waits
        emulator_admin.add_fault("latency", action="AssumeRole", target=issuing_role, latency_s=SLOW_SECONDS,
                                 count=1)
        kube.create_credential(assumed_role_credential(team, "issuing", seeded.name, issuing_role))
        observed["issuing"] = wait_for("issuing: Ready=False (Issuing)", lambda: (
            (body := kube.credential(team, "issuing"))
            and conditions(body).get("Ready") == "False (Issuing)" and body), timeout=SLOW_SECONDS - 3, interval=0.2)
        for name in ("ready", "failing", "revoked", "invalid"):
            observed[name] = kube.credential(team, name)
    finally:
        emulator_admin.clear_faults()

    failing_body = observed["failing"]
    status = failing_body["status"]
    assert status["failedAttempts"] >= 1 and status["lastFailureTime"] and status["nextRetryTime"]
    assert kube.secret(team, "failing")["data"]["AWS_ACCESS_KEY_ID"] == status["accessKeyId"]  # kept meanwhile
    assert "nextRetryTime" not in observed["ready"]["status"] and observed["ready"]["status"]["failedAttempts"] == 0

    order = ["ready", "issuing", "failing", "revoked", "invalid"]
    results = {r["name"]: r for r in judge([observed[n] for n in order])}
    table = [(n, results[n]["kstatus"], results[n]["argoStatus"], conditions(observed[n])) for n in order]
    print("\nstate    | kstatus    | Argo CD     | conditions")
    for name, kstatus, argo, conds in table:
        print(f"{name:8} | {kstatus:10} | {argo:11} | {', '.join(f'{k}={v}' for k, v in conds.items())}")
    for name in order:
        print(f"  {name}: kstatus {results[name]['kstatusMessage']!r}; Argo CD {results[name]['argoMessage']!r}")

    assert {n: (results[n]["kstatus"], results[n]["argoStatus"]) for n in order} == {
        "ready": ("Current", "Healthy"),
        "issuing": ("InProgress", "Progressing"),
        "failing": ("InProgress", "Progressing"),
        "revoked": ("Failed", "Degraded"),
        "invalid": ("Failed", "Degraded"),
    }
    assert conditions(observed["ready"]) == {"Ready": "True (Issued)", "RotationFailing": "False (Succeeded)"}
    assert conditions(observed["failing"]) == {"Ready": "True (Issued)", "RotationFailing": "True (Throttled)",
                                               "Reconciling": "True (Throttled)"}
    assert conditions(observed["revoked"]) == {"Ready": "True (Issued)", "RotationFailing": "True (NotAllowed)",
                                               "Stalled": "True (NotAllowed)"}
    assert conditions(observed["invalid"]) == {"Ready": "False (NotAllowed)", "RotationFailing": "True (NotAllowed)",
                                               "Stalled": "True (NotAllowed)"}

    # The faults gone, the failing rotation succeeds: RotationFailing False, the failure fields reset.
    kube.patch_credential(team, "failing", {"metadata": {"annotations": {"vaultsts.io/rotate": "again"}}})
    recovered = wait_for("failing recovered", lambda: (
        (body := kube.credential(team, "failing"))
        and conditions(body).get("RotationFailing") == "False (Succeeded)" and body), timeout=60)
    assert recovered["status"]["failedAttempts"] == 0 and "nextRetryTime" not in recovered["status"]
    assert recovered["status"]["lastFailureTime"] >= status["lastFailureTime"]  # kept: the last failure's time
    assert judge([recovered])[0]["kstatus"] == "Current"
    issuing = kube.wait_ready(team, "issuing", timeout=60)
    assert judge([issuing])[0]["argoStatus"] == "Healthy"
    issued.add_secret(kube.secret(team, "failing"))
    issued.add_secret(kube.secret(team, "issuing"))
