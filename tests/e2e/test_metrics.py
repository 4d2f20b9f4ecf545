"""The Prometheus endpoint is scraped and parsed: figures match what the operator did."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.seed import RoleSpec, seed_identity
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.usefixtures("operator")


def scrape(operator) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(operator.metrics_text())}


def test_metrics_describe_issuing(stack, kube, operator, unique, issued):
    team = kube.namespace(f"metrics-{unique}")
    seeded = seed_identity(stack, f"metrics-{unique}", roles=[RoleSpec(f"app-metrics-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    kube.create_credential(assumed_role_credential(team, "m", seeded.name, seeded.role_arns[0]))
    kube.wait_ready(team, "m")
    issued.add_secret(kube.secret(team, "m"))

    families = scrape(operator)
    expiry = [s for s in families["vault_sts_operator_credential_seconds_until_expiry"]
              if s.labels == {"namespace": team, "name": "m"}]
    assert len(expiry) == 1 and 3000 < expiry[0].value <= 3600

    stamp = [s for s in families["vault_sts_operator_credential_expiration_timestamp_seconds"]
             if s.labels == {"namespace": team, "name": "m"}]
    assert len(stamp) == 1 and 3000 < stamp[0].value - time.time() <= 3600
    rotations = [s for s in families["vault_sts_operator_rotations"]
                 if s.name.endswith("_total") and s.labels["namespace"] == team]
    assert sum(s.value for s in rotations) == 1
    codes = [s for s in families["vault_sts_operator_totp_codes_used"]
             if s.name.endswith("_total") and s.labels["identity"] == seeded.name]
    assert [s.value for s in codes] == [1]
    sts_ok = [s for s in families["vault_sts_operator_sts_requests"]
              if s.name.endswith("_total") and s.labels == {"action": "AssumeRole", "outcome": "ok"}]
    assert sts_ok and sts_ok[0].value >= 1
    vault_ok = [s for s in families["vault_sts_operator_vault_requests"]
                if s.name.endswith("_total") and s.labels["operation"] == "totp_code" and s.labels["outcome"] == "ok"]
    assert vault_ok and vault_ok[0].value >= 1
    latency = [s for s in families["vault_sts_operator_sts_request_seconds"] if s.name.endswith("_count")]
    assert latency and all(s.value >= 1 for s in latency)

    kube.delete_credential(team, "m")
    wait_for("the deleted credential's series to go", lambda: f'namespace="{team}"' not in "\n".join(
        line for line in operator.metrics_text().splitlines() if "expir" in line), timeout=30)
