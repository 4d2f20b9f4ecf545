from datetime import UTC, datetime, timedelta

import pytest

from vault_sts_operator.api.conditions import set_condition
from vault_sts_operator.api.specs import (
    KubernetesAuth,
    KvAccessKey,
    TokenAuth,
    VaultAwsAccessKey,
    VaultConnection,
    parse_credential,
    parse_identity,
)
from vault_sts_operator.domain.errors import InvalidSpecError

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IDENTITY = {
    "vault": {"address": "http://127.0.0.1:8200/", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}},
    "accessKey": {"kv": {"path": "aws/ops"}},
    "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ops", "totp": {"key": "ops"}},
    "allowedNamespaces": ["team-a"],
    "allowedRoleArns": ["arn:aws:iam::123456789012:role/app-*"],
}


def test_conditions_keep_transition_time_unless_status_flips():
    first = set_condition(None, type_="Ready", status=True, reason="Issued", message="m", generation=1, now=T0)
    later = set_condition(first, type_="Ready", status=True, reason="Issued", message="m2", generation=2,
                          now=T0 + timedelta(hours=1))
    assert later[0]["lastTransitionTime"] == "2026-11-24T12:00:00Z"
    assert later[0]["observedGeneration"] == 2 and later[0]["message"] == "m2"
    flipped = set_condition(later, type_="Ready", status=False, reason="VaultError", message="down", generation=2,
                            now=T0 + timedelta(hours=2))
    assert flipped[0]["lastTransitionTime"] == "2026-11-24T14:00:00Z"
    assert flipped[0]["status"] == "False"
    assert len(flipped) == 1


def test_conditions_keep_other_types():
    conds = [{"type": "Other", "status": "True"}]
    out = set_condition(conds, type_="Ready", status=True, reason="r", message="m", generation=None, now=T0)
    assert [c["type"] for c in out] == ["Other", "Ready"]


def test_parse_identity_defaults():
    ident = parse_identity("ops", "uid-1", IDENTITY, default_vault=None, operator_namespace="vso")
    assert ident.vault.address == "http://127.0.0.1:8200"
    assert isinstance(ident.vault.auth, TokenAuth)
    assert ident.vault.auth.token_ref.namespace == "vso"
    assert ident.access_key == KvAccessKey(mount="secret", path="aws/ops")
    assert ident.session_duration == 43200
    assert ident.totp.period == 30


def test_parse_identity_uses_operator_default_vault():
    default = VaultConnection(address="https://vault:8200", auth=KubernetesAuth(role="vso"), namespace="ns1")
    spec = {k: v for k, v in IDENTITY.items() if k != "vault"}
    ident = parse_identity("ops", "u", spec, default_vault=default, operator_namespace="vso")
    assert ident.vault == default


def test_parse_identity_without_vault_anywhere():
    spec = {k: v for k, v in IDENTITY.items() if k != "vault"}
    with pytest.raises(InvalidSpecError, match=r"spec\.vault\.address is required"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso")


def test_parse_identity_exactly_one_access_key():
    spec = {**IDENTITY, "accessKey": {"kv": {"path": "a"}, "vaultAWS": {"role": "r"}}}
    with pytest.raises(InvalidSpecError, match="exactly one of kv, vaultAWS"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso")


def test_parse_identity_vault_aws_assumed_role_needs_no_mfa():
    spec = {**IDENTITY, "accessKey": {"vaultAWS": {"role": "ops", "credentialType": "assumedRole"}}}
    del spec["mfa"]
    ident = parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso")
    assert ident.access_key == VaultAwsAccessKey(role="ops", credential_type="assumedRole")


def test_session_key_changes_with_serial():
    a = parse_identity("ops", "u", IDENTITY, default_vault=None, operator_namespace="vso")
    other = {**IDENTITY, "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/other", "totp": {"key": "ops"}}}
    b = parse_identity("ops", "u", other, default_vault=None, operator_namespace="vso")
    assert a.session_key != b.session_key


def test_parse_credential_defaults_and_hash():
    spec = {"identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/app-billing"}
    cred = parse_credential("team-a", "billing", spec)
    assert cred.role_session_name == "team-a@billing"
    assert cred.target.secret_name == "billing"
    assert cred.duration_seconds == 3600 and cred.mfa_mode == "session"
    same = parse_credential("team-a", "billing", {**spec, "renewBefore": "10m"})
    assert same.issuance_hash() == cred.issuance_hash()  # scheduling fields do not reissue
    changed = parse_credential("team-a", "billing", {**spec, "durationSeconds": 900})
    assert changed.issuance_hash() != cred.issuance_hash()


def test_session_mode_caps_duration():
    spec = {"identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/x", "durationSeconds": 7200}
    with pytest.raises(InvalidSpecError, match="one hour"):
        parse_credential("ns", "n", spec)
    assert parse_credential("ns", "n", {**spec, "mfa": "direct"}).duration_seconds == 7200


def test_bad_renew_before():
    spec = {"identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/x", "renewBefore": "soon"}
    with pytest.raises(InvalidSpecError, match="renewBefore"):
        parse_credential("ns", "n", spec)
