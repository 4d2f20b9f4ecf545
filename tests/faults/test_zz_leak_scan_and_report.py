"""Runs last (file order): no secret reached a log, Event, status or metric across the whole fault suite, no
Secret was blanked, no TOTP code was reused; writes and prints the suite's figures (.stack/fault-report.json)."""

from __future__ import annotations

import base64
import json
import re

import hvac.exceptions
from kubernetes import client

from devstack.manifests import GROUP, VERSION
from tests.e2e.helpers import vault_layout_in_tenant_view
from tests.faults.helpers import REPORT_NAME, REPORTS_WRITTEN

VAULT_TOKEN = re.compile(r"\b(?:hv|b)?s\.[A-Za-z0-9]{20,}")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}")


def test_no_leak_no_blank_no_reuse_and_report(stack, kube, operators, guard, report, emulator_admin, vault):
    events = client.CoreV1Api(kube.api).list_event_for_all_namespaces()
    custom = kube.custom
    objects = (custom.list_cluster_custom_object(GROUP, VERSION, "assumedrolecredentials")["items"]
               + custom.list_cluster_custom_object(GROUP, VERSION, "mfaidentities")["items"])
    surfaces = {f"{p.name} log": p.log_text() for p in operators}
    surfaces["events"] = "\n".join(f"{e.reason} {e.message}" for e in events.items)
    surfaces["statuses"] = json.dumps([o.get("status") for o in objects])
    surfaces["metrics"] = "\n".join(p.metrics_text() for p in operators if p.proc is not None)

    # every secret value of every Secret the guard saw, read now, plus the long-term keys still in Vault
    secrets: set[str] = set()
    for item in kube.core.list_secret_for_all_namespaces(
            label_selector="app.kubernetes.io/managed-by=vault-sts-operator").items:
        data = {k: v for k, v in (item.data or {}).items() if k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
        secrets.update(base64.b64decode(v).decode() for v in data.values())
    try:  # an OpenBao restart (the Vault fault tests) wipes the dev server's KV unless it was re-seeded
        keys = vault.secrets.kv.v2.list_secrets(path="aws", mount_point="secret")["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        keys = []
    for key in keys:
        stored = vault.secrets.kv.v2.read_secret_version(path=f"aws/{key}", mount_point="secret",
                                                         raise_on_deleted_version=True)
        secrets.add(stored["data"]["data"]["secret_access_key"])
    codes = emulator_admin.spent_codes()
    assert len(secrets) >= 20 and codes
    for surface, text in surfaces.items():
        assert not [v[:6] for v in secrets if v in text], f"secret values in {surface}"
        assert not [c for c in codes if re.search(rf"(?<!\d){c}(?!\d)", text)], f"TOTP codes in {surface}"
        assert not VAULT_TOKEN.search(text), f"a Vault token in {surface}"
        assert not JWT.search(text), f"a JWT in {surface}"
    # tenant-visible surfaces (credential statuses, Events) name no Vault address, path or key
    assert vault_layout_in_tenant_view(kube) == []

    summary = report.summary(guard, dict(emulator_admin.counters()))
    summary["secret_guard_poll_errors"] = guard.poll_errors
    path = stack.stack_dir / REPORT_NAME
    path.write_text(json.dumps(summary, indent=2))
    REPORTS_WRITTEN.append(path)
    assert summary["faults_injected"] >= 10
    assert guard.observations > 100
    assert summary["secrets_blanked"] == 0, summary["secrets_blanked_detail"]
    assert not summary["secrets_with_invalid_credentials"]
    assert summary["totp_codes_reused"] == 0
