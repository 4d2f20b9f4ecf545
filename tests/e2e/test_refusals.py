"""Bad input and refusals end in a clear condition and Event: no Secret, no crash loop, no Secret change."""

from __future__ import annotations

import copy

import pytest
import yaml

from devstack.manifests import GROUP, VERSION, assumed_role_credential, mfa_identity
from devstack.seed import RoleSpec, seed_identity
from tests.e2e.helpers import MFAID, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def team(kube, unique):
    return kube.namespace(f"refuse-{unique}")


@pytest.fixture
def identity(stack, kube, team, unique):
    seeded = seed_identity(stack, f"refuse-{unique}", roles=[RoleSpec("app-ok-" + unique)])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    return seeded


def assert_no_secret_and_warning(kube, ns, name, reason):
    assert kube.secret(ns, name) is None
    kube.wait_event(ns, name, f"Warning {reason}", lambda e: e.reason == reason and e.type == "Warning")


def test_namespace_outside_allow_list(kube, identity, unique):
    other = kube.namespace(f"outsider-{unique}")
    kube.create_credential(assumed_role_credential(other, "x", identity.name, identity.role_arns[0]))
    cond = kube.wait_reason(other, "x", "NotAllowed")
    assert other in cond["message"] and "allowedNamespaces" in cond["message"]
    assert_no_secret_and_warning(kube, other, "x", "NotAllowed")


def test_role_outside_allow_list(kube, identity, team):
    role = f"arn:aws:iam::{identity.account}:role/admin"
    kube.create_credential(assumed_role_credential(team, "admin", identity.name, role))
    cond = kube.wait_reason(team, "admin", "NotAllowed")
    assert "allowedRoleArns" in cond["message"]
    assert_no_secret_and_warning(kube, team, "admin", "NotAllowed")


def test_unknown_identity(kube, team):
    kube.create_credential(assumed_role_credential(team, "orphan", "no-such-identity",
                                                   "arn:aws:iam::123456789012:role/x"))
    cond = kube.wait_reason(team, "orphan", "IdentityNotFound")
    assert "no-such-identity" in cond["message"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(roleArn="arn:aws:iam::12345:role/x"), "spec.roleArn"),
        (lambda s: s.update(roleArn="arn:aws-cn:iam::123456789012:role/ok", durationSeconds=7200),
         "durationSeconds above 3600 needs mfa: direct"),
        (lambda s: s.update(durationSeconds=60), "spec.durationSeconds"),
        (lambda s: s.update(mfa="sometimes"), "spec.mfa"),
        (lambda s: s.update(renewBefore="soon"), "spec.renewBefore"),
        (lambda s: s.update(roleSessionName="has space"), "spec.roleSessionName"),
        (lambda s: s.pop("identityRef"), "identityRef"),
        (lambda s: s.update(rolloutRestartTargets=[{"kind": "Pod", "name": "p"}]), "kind"),
    ],
)
def test_malformed_credentials_are_refused_at_apply(stack, team, mutate, expected):
    manifest = assumed_role_credential(team, "bad", "ops", "arn:aws:iam::123456789012:role/ok")
    spec = copy.deepcopy(manifest["spec"])
    mutate(spec)
    manifest["spec"] = spec
    result = kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["accessKey"].update(vaultAWS={"role": "r"}), "exactly one of kv, vaultAWS"),
        (lambda s: s["vault"]["auth"].update(tokenSecretRef={"name": "t", "key": "k"}), "exactly one of kubernetes"),
        (lambda s: s["mfa"].update(serialNumber="bad serial!"), "spec.mfa.serialNumber"),
        (lambda s: s["session"].update(durationSeconds=200000), "spec.session.durationSeconds"),
        (lambda s: s.update(allowedRoleArns=["not-an-arn"]), "allowedRoleArns"),
        (lambda s: s.pop("mfa"), "spec.mfa (serialNumber and totp) is required"),
    ],
)
def test_malformed_identities_are_refused_at_apply(stack, identity, mutate, expected):
    manifest = mfa_identity(stack, identity, name=f"bad-{identity.name}", allowed_namespaces=["x"])
    mutate(manifest["spec"])
    result = kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def identity_message(kube, name: str) -> str:
    """The MFAIdentity's Ready message once its verification failed (the platform admin's view)."""
    def failed() -> str:
        identity = kube.custom.get_cluster_custom_object(GROUP, VERSION, MFAID, name)
        conds = [c for c in (identity.get("status") or {}).get("conditions") or () if c["type"] == "Ready"]
        return str(conds[0]["message"]) if conds and conds[0]["status"] == "False" else ""
    return str(wait_for(f"MFAIdentity {name} Ready=False", failed))


def test_missing_vault_path(stack, kube, team, identity):
    manifest = mfa_identity(stack, identity, name=f"nokv-{identity.name}", allowed_namespaces=[team])
    manifest["spec"]["accessKey"]["kv"]["path"] = "aws/does-not-exist"
    kube.apply_identity(manifest)
    kube.create_credential(assumed_role_credential(team, "nokv", manifest["metadata"]["name"],
                                                   identity.role_arns[0]))
    cond = kube.wait_reason(team, "nokv", "VaultPermissionDenied")
    # The tenant is told what failed, not where the platform keeps it; the admin's MFAIdentity says where.
    assert "the identity's access key could not be read" in cond["message"]
    assert "aws/does-not-exist" not in cond["message"] and stack.vault_addr not in cond["message"]
    assert "aws/does-not-exist" in identity_message(kube, manifest["metadata"]["name"])
    assert_no_secret_and_warning(kube, team, "nokv", "VaultPermissionDenied")
    # Both stuck until someone fixes the configuration: kstatus' Stalled (Failed), the credential not Ready.
    body = kube.credential(team, "nokv")
    conds = {c["type"]: (c["status"], c["reason"]) for c in body["status"]["conditions"]}
    assert conds["Stalled"] == ("True", "VaultPermissionDenied") and \
        conds["Ready"] == ("False", "VaultPermissionDenied") and "Reconciling" not in conds
    identity = kube.custom.get_cluster_custom_object(GROUP, VERSION, MFAID, manifest["metadata"]["name"])
    stalled = [c for c in identity["status"]["conditions"] if c["type"] == "Stalled"]
    assert stalled and stalled[0]["status"] == "True" and stalled[0]["reason"] == "VaultPermissionDenied"


def test_wrong_totp_key(stack, kube, team, identity):
    manifest = mfa_identity(stack, identity, name=f"nototp-{identity.name}", allowed_namespaces=[team])
    manifest["spec"]["mfa"]["totp"]["key"] = "not-a-key"
    kube.apply_identity(manifest)
    kube.create_credential(assumed_role_credential(team, "nototp", manifest["metadata"]["name"],
                                                   identity.role_arns[0]))
    cond = kube.wait_reason(team, "nototp", "VaultPermissionDenied")
    assert "the identity's MFA code could not be read" in cond["message"]
    assert "not-a-key" not in cond["message"] and "totp/" not in cond["message"]
    assert "totp/code/not-a-key" in identity_message(kube, manifest["metadata"]["name"])
    assert kube.secret(team, "nototp") is None


def test_sts_access_denied(stack, kube, team, unique, emulator_admin):
    seeded = seed_identity(stack, f"deny-{unique}", roles=[])
    untrusting = emulator_admin.create_role(f"arn:aws:iam::{seeded.account}:role/locked-{unique}",
                                            [f"arn:aws:iam::{seeded.account}:user/someone-else"], require_mfa=True)
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team], allowed_role_arns=[untrusting["arn"]]))
    kube.create_credential(assumed_role_credential(team, "denied", seeded.name, untrusting["arn"]))
    cond = kube.wait_reason(team, "denied", "AccessDenied")
    assert "not authorized to perform: sts:AssumeRole" in cond["message"]
    assert_no_secret_and_warning(kube, team, "denied", "AccessDenied")


def test_foreign_secret_is_never_overwritten(kube, team, identity):
    kube.core.create_namespaced_secret(team, {"metadata": {"name": "precious"}, "stringData": {"keep": "me"}})
    kube.create_credential(assumed_role_credential(team, "clash", identity.name, identity.role_arns[0],
                                                   target={"secretName": "precious"}))
    cond = kube.wait_reason(team, "clash", "SecretConflict")
    assert "not created by vault-sts-operator" in cond["message"]
    assert kube.secret(team, "precious")["data"] == {"keep": "me"}


def test_two_credentials_naming_one_secret_conflict(kube, team, identity):
    kube.create_credential(assumed_role_credential(team, "first", identity.name, identity.role_arns[0],
                                                   target={"secretName": "shared"}))
    kube.wait_ready(team, "first")
    owner_key = kube.secret(team, "shared")["data"]["AWS_ACCESS_KEY_ID"]
    kube.create_credential(assumed_role_credential(team, "second", identity.name, identity.role_arns[0],
                                                   target={"secretName": "shared"}))
    cond = kube.wait_reason(team, "second", "SecretConflict")
    assert "belongs to AssumedRoleCredential 'first'" in cond["message"]
    assert kube.secret(team, "shared")["data"]["AWS_ACCESS_KEY_ID"] == owner_key
