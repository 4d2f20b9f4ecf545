"""Tenants: nothing a namespace writes in an AssumedRoleCredential reaches another namespace, another Vault
path, or a Secret the operator does not own; two credentials naming one Secret do not flip-flop."""

from __future__ import annotations

import time

import yaml

from devstack.manifests import GROUP, VERSION, assumed_role_credential
from tests.e2e.helpers import kubectl

STABLE_SECONDS = 20


def test_secret_name_cannot_leave_the_namespace(stack, kube, team, unique):
    victim = kube.namespace(f"victim-{unique}")
    for bad in (f"{victim}/stolen", "../stolen", f"stolen.{victim}.svc/x", "Stolen", "-x"):
        manifest = assumed_role_credential(team, "escape", "any", "arn:aws:iam::123456789012:role/x",
                                           target={"secretName": bad})
        result = kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
        assert result.returncode != 0 and "spec.target.secretName" in result.stderr, (bad, result.stderr)


def test_unknown_fields_are_pruned_and_change_nothing(stack, kube, team, unique, make_identity, operator):
    """Fields that are not in the schema (a namespace for the Secret, a Vault path, a TOTP key) are dropped by
    the apiserver: the Secret lands in the CR's namespace, and Vault is read only at the identity's paths."""
    victim = kube.namespace(f"victim-{unique}")
    ident = make_identity("prune")
    other = make_identity("other-tenant")
    manifest = assumed_role_credential(team, "sneaky", ident.name, ident.role_arns[0],
                                       target={"secretName": "sneaky", "namespace": victim},
                                       vault={"path": other.kv_path},
                                       accessKey={"kv": {"mount": "secret", "path": other.kv_path}},
                                       mfa="session")
    manifest["spec"]["namespace"] = victim
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, team, "assumedrolecredentials", manifest)
    stored = kube.credential(team, "sneaky")["spec"]
    assert "namespace" not in stored and "vault" not in stored and "accessKey" not in stored
    assert "namespace" not in stored["target"]
    kube.wait_ready(team, "sneaky", timeout=60)
    assert kube.secret(team, "sneaky") is not None
    assert kube.secret(victim, "sneaky") is None
    # Vault saw no request for a path outside this identity: this credential never failed a pass (other
    # tests' credentials on a shared stack may be failing on purpose, so the log is read, not counters)
    assert f"{team}/sneaky not issued" not in operator.log_text()
    assert {c["type"]: c["reason"] for c in kube.credential(team, "sneaky")["status"]["conditions"]} == {
        "Ready": "Issued", "RotationFailing": "Succeeded"}


def test_identity_refuses_other_namespaces_and_roles(kube, team, unique, make_identity, emulator_admin):
    ident = make_identity("allow", roles=2)
    outsider = kube.namespace(f"outsider-{unique}")
    issued = emulator_admin.counters()["issued"]
    kube.create_credential(assumed_role_credential(outsider, "x", ident.name, ident.role_arns[0]))
    kube.create_credential(assumed_role_credential(team, "admin", ident.name,
                                                   f"arn:aws:iam::{ident.account}:role/admin-{unique}"))
    kube.wait_reason(outsider, "x", "NotAllowed")
    kube.wait_reason(team, "admin", "NotAllowed")
    assert kube.secret(outsider, "x") is None and kube.secret(team, "admin") is None
    assert emulator_admin.counters()["issued"] == issued


def secret_version(kube, ns, name):
    return kube.core.read_namespaced_secret(name, ns).metadata.resource_version


def test_foreign_and_shared_secrets_stay_put(kube, team, make_identity, report):
    ident = make_identity("shared")
    kube.core.create_namespaced_secret(team, {"metadata": {"name": "precious"}, "stringData": {"keep": "me"}})
    kube.create_credential(assumed_role_credential(team, "first", ident.name, ident.role_arns[0],
                                                   target={"secretName": "shared"}))
    kube.wait_ready(team, "first")
    kube.create_credential(assumed_role_credential(team, "second", ident.name, ident.role_arns[0],
                                                   target={"secretName": "shared"}))
    kube.create_credential(assumed_role_credential(team, "clash", ident.name, ident.role_arns[0],
                                                   target={"secretName": "precious"}))
    kube.wait_reason(team, "second", "SecretConflict")
    kube.wait_reason(team, "clash", "SecretConflict")
    versions = {n: secret_version(kube, team, n) for n in ("shared", "precious")}
    # both conflicting credentials ask again: still nothing moves
    kube.patch_credential(team, "second", {"metadata": {"annotations": {"vaultsts.io/rotate": "please"}}})
    kube.patch_credential(team, "clash", {"metadata": {"annotations": {"vaultsts.io/rotate": "please"}}})
    deadline = time.monotonic() + STABLE_SECONDS
    while time.monotonic() < deadline:
        assert {n: secret_version(kube, team, n) for n in versions} == versions
        time.sleep(1)
    assert kube.secret(team, "precious")["data"] == {"keep": "me"}
    owner = kube.core.read_namespaced_secret("shared", team).metadata.owner_references[0]
    assert owner.name == "first"
    assert kube.ready(team, "second")["reason"] == "SecretConflict"
    report.fault("test_foreign_and_shared_secrets_stay_put", "conflicting Secret targets", STABLE_SECONDS,
                 secret_writes=0)
