"""A live scrape of the operator passes `promtool check metrics`, and carries the per-credential ready
status (with the condition reason), the renewal time, the MFA session expiry and build_info."""

from __future__ import annotations

import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.seed import RoleSpec, seed_identity
from devstack.tools import promtool
from tests.e2e.helpers import wait_for
from vault_sts_operator import __version__

pytestmark = pytest.mark.usefixtures("operator")


def samples(text: str, metric: str, /, **labels: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def test_live_scrape_passes_promtool_and_has_the_new_series(stack, kube, operator, unique, issued):
    binary = promtool()
    assert binary is not None, "promtool is not built: bash devstack/build.sh promtool"
    team = kube.namespace(f"promtool-{unique}")
    seeded = seed_identity(stack, f"promtool-{unique}", roles=[RoleSpec(f"app-promtool-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    kube.create_credential(assumed_role_credential(team, "ok", seeded.name, seeded.role_arns[0]))
    # A role outside the identity's allow-list: Ready=False, reason NotAllowed.
    kube.create_credential(assumed_role_credential(team, "refused", seeded.name,
                                                   "arn:aws:iam::123456789012:role/elsewhere"))
    kube.wait_ready(team, "ok")
    kube.wait_reason(team, "refused", "NotAllowed")
    issued.add_secret(kube.secret(team, "ok"))

    text = wait_for("both credentials' ready series", lambda: (
        t if samples(t := operator.metrics_text(), "vault_sts_operator_credential_ready_status", namespace=team,
                     name="refused") else None), timeout=30)
    check = subprocess.run([str(binary), "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    (ready,) = samples(text, "vault_sts_operator_credential_ready_status", namespace=team, name="ok")
    assert ready.labels["reason"] == "Issued" and ready.value == 1
    (refused,) = samples(text, "vault_sts_operator_credential_ready_status", namespace=team, name="refused")
    assert refused.labels["reason"] == "NotAllowed" and refused.value == 0
    (renewal,) = samples(text, "vault_sts_operator_credential_renewal_timestamp_seconds", namespace=team, name="ok")
    (expiry,) = samples(text, "vault_sts_operator_credential_expiration_timestamp_seconds", namespace=team, name="ok")
    status = kube.credential(team, "ok")["status"]
    assert time.time() < renewal.value < expiry.value
    assert abs(renewal.value - _ts(status["renewalTime"])) < 1.5
    (session,) = samples(text, "vault_sts_operator_mfa_session_expiration_timestamp_seconds", identity=seeded.name)
    assert session.value - time.time() > 3600  # the identity's session outlives the role credential
    (build,) = samples(text, "vault_sts_operator_build_info")
    assert build.labels["version"] == __version__ and build.value == 1

    # Fixing the role turns the same credential's single series to Ready: the NotAllowed one is gone.
    kube.patch_credential(team, "refused", {"spec": {"roleArn": seeded.role_arns[0]}})
    kube.wait_ready(team, "refused")
    after = wait_for("the ready series to flip", lambda: (
        s if (s := samples(operator.metrics_text(), "vault_sts_operator_credential_ready_status", namespace=team,
                           name="refused")) and s[0].value == 1 else None), timeout=30)
    assert [s.labels["reason"] for s in after] == ["Issued"]
    issued.add_secret(kube.secret(team, "refused"))
    for name in ("ok", "refused"):
        kube.delete_credential(team, name)
    wait_for("the deleted credentials' ready series to go", lambda: not samples(
        operator.metrics_text(), "vault_sts_operator_credential_ready_status", namespace=team), timeout=30)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
