"""Runs after the other end-to-end tests (file order): no secret value reached a log, Event, status or metric.

It greps for every value the run issued (secret keys and session tokens the tests read from Secrets),
every long-term key in Vault's KV, every TOTP code the STS emulator accepted, and the shapes of Vault
tokens and ServiceAccount JWTs.
"""

from __future__ import annotations

import json
import re

from kubernetes import client

from devstack.manifests import GROUP, VERSION
from tests.e2e.helpers import vault_layout_in_tenant_view

VAULT_TOKEN = re.compile(r"\b(?:hv|b)?s\.[A-Za-z0-9]{20,}")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}")


def surfaces(kube, operator) -> dict[str, str]:
    events = client.CoreV1Api(kube.api).list_event_for_all_namespaces()
    credentials = kube.custom.list_cluster_custom_object(GROUP, VERSION, "assumedrolecredentials")
    identities = kube.custom.list_cluster_custom_object(GROUP, VERSION, "mfaidentities")
    return {
        "operator logs": "\n".join(p.read_text(errors="replace") for p in sorted(operator.log_file.parent.glob(
            "operator*.log"))),
        "events": "\n".join(f"{e.reason} {e.message}" for e in events.items),
        "statuses": json.dumps([i.get("status") for i in credentials["items"] + identities["items"]]),
        "metrics": operator.metrics_text(),
    }


def long_term_keys(vault) -> set[str]:
    keys = vault.secrets.kv.v2.list_secrets(path="aws", mount_point="secret")["data"]["keys"]
    values = set()
    for key in keys:
        data = vault.secrets.kv.v2.read_secret_version(path=f"aws/{key}", mount_point="secret",
                                                       raise_on_deleted_version=True)["data"]["data"]
        values.add(data["secret_access_key"])
    return values


def test_no_secret_value_anywhere(kube, operator, issued, vault, emulator_admin):
    assert len(issued.values) >= 10, "the scan needs the values the other tests issued"
    codes = emulator_admin.spent_codes()
    assert codes, "the emulator accepted no TOTP code during this run"
    where = surfaces(kube, operator)
    assert "issued" in where["operator logs"]  # the log is the operator's and it did issue
    secrets = issued.values | long_term_keys(vault)
    for surface, text in where.items():
        leaked = [v[:6] + "..." for v in secrets if v in text]
        assert not leaked, f"secret values in {surface}: {leaked}"
        spent = [c for c in codes if re.search(rf"(?<!\d){c}(?!\d)", text)]
        assert not spent, f"TOTP codes in {surface}: {spent}"
        assert not VAULT_TOKEN.search(text), f"a Vault token in {surface}"
        assert not JWT.search(text), f"a JWT in {surface}"


def test_tenants_never_see_the_vault_layout(kube, operator):
    """AssumedRoleCredential statuses and Events name no Vault address, path or key (the refusal tests made
    Vault fail in several ways first); the operator log keeps the details."""
    assert vault_layout_in_tenant_view(kube) == []
    assert "Vault has nothing at" in operator.log_text() or "Vault denied" in operator.log_text()
