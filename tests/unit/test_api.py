from datetime import UTC, datetime, timedelta

import pytest

from vault_sts_operator.api.conditions import set_condition
from vault_sts_operator.api.specs import (
    ConnectionRules,
    KubernetesAuth,
    KvAccessKey,
    SecretKeyRef,
    TokenAuth,
    VaultAwsAccessKey,
    VaultConnection,
    parse_credential,
    parse_identity,
)
from vault_sts_operator.domain.errors import InvalidSpecError

ALLOWED_VAULTS = ("https://127.0.0.1:8200", "https://v:8200", "https://v", "http://v:8200", "https://other:8200")
RULES = ConnectionRules(vault_addresses=ALLOWED_VAULTS)


T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IDENTITY = {
    "vault": {"address": "https://127.0.0.1:8200/", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}},
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
    ident = parse_identity("ops", "uid-1", IDENTITY, default_vault=None, operator_namespace="vso", rules=RULES)
    assert ident.vault.address == "https://127.0.0.1:8200"
    assert isinstance(ident.vault.auth, TokenAuth)
    assert ident.vault.auth.token_ref.namespace == "vso"
    assert ident.access_key == KvAccessKey(mount="secret", path="aws/ops")
    assert ident.session_duration == 43200
    assert ident.totp.period == 30


def test_parse_identity_uses_operator_default_vault():
    default = VaultConnection(address="https://vault:8200", auth=KubernetesAuth(role="vso"), namespace="ns1")
    spec = {k: v for k, v in IDENTITY.items() if k != "vault"}
    ident = parse_identity("ops", "u", spec, default_vault=default, operator_namespace="vso", rules=RULES)
    assert ident.vault == default


def test_parse_identity_without_vault_anywhere():
    spec = {k: v for k, v in IDENTITY.items() if k != "vault"}
    with pytest.raises(InvalidSpecError, match=r"spec\.vault\.address is required"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso", rules=RULES)


def test_parse_identity_exactly_one_access_key():
    spec = {**IDENTITY, "accessKey": {"kv": {"path": "a"}, "vaultAWS": {"role": "r"}}}
    with pytest.raises(InvalidSpecError, match="exactly one of kv, vaultAWS"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso", rules=RULES)


def test_parse_identity_vault_aws_assumed_role_needs_no_mfa():
    spec = {**IDENTITY, "accessKey": {"vaultAWS": {"role": "ops", "credentialType": "assumedRole"}}}
    del spec["mfa"]
    ident = parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso", rules=RULES)
    assert ident.access_key == VaultAwsAccessKey(role="ops", credential_type="assumedRole")


def test_session_key_changes_with_serial():
    a = parse_identity("ops", "u", IDENTITY, default_vault=None, operator_namespace="vso", rules=RULES)
    other = {**IDENTITY, "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/other", "totp": {"key": "ops"}}}
    b = parse_identity("ops", "u", other, default_vault=None, operator_namespace="vso", rules=RULES)
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


# -- the operator holds no more than it needs (issue 10) ----------------------------------------------------------
DEFAULT_VAULT = VaultConnection(address="https://vault.platform:8200", auth=KubernetesAuth(role="vso"),
                                namespace="ns1", ca_bundle="PEM")
NO_VAULT = {k: v for k, v in IDENTITY.items() if k != "vault"}


def test_default_auth_goes_to_the_default_address_only():
    spec = {**NO_VAULT, "vault": {"address": "https://attacker.example:8200"}}
    listed = ConnectionRules(vault_addresses=("https://attacker.example:8200",))
    with pytest.raises(InvalidSpecError, match=r"spec\.vault\.auth is required: spec\.vault\.address names a Vault "
                                               r"other than the operator's default"):
        parse_identity("ops", "u", spec, default_vault=DEFAULT_VAULT, operator_namespace="vso", rules=listed)


@pytest.mark.parametrize("address", ["https://attacker.example:8200", "https://vault.platform:8201",
                                     "http://vault.platform:8200", "https://vault.platform.evil.example:8200"])
def test_a_vault_the_platform_did_not_list_is_refused_whatever_the_auth(address):
    spec = {**NO_VAULT, "vault": {"address": address, "auth": {"kubernetes": {"role": "r"}}}}
    with pytest.raises(InvalidSpecError, match=r"spec\.vault\.address is not a destination the platform allows"):
        parse_identity("ops", "u", spec, default_vault=DEFAULT_VAULT, operator_namespace="vso",
                       rules=ConnectionRules(allow_insecure_http=True, vault_addresses=("https://v:8200",)))


def test_the_default_vault_credentials_secret_goes_to_the_default_address_only():
    default = VaultConnection(address="https://vault.platform:8200",
                              auth=TokenAuth(token_ref=SecretKeyRef(name="vault-token", namespace="vso", key="token")))
    rules = ConnectionRules(vault_addresses=("https://other:8200",))
    for auth in ({"tokenSecretRef": {"name": "vault-token", "key": "anything"}},
                 {"appRole": {"roleId": "r", "secretIdRef": {"name": "vault-token", "key": "token"}}}):
        spec = {**NO_VAULT, "vault": {"address": "https://other:8200", "auth": auth}}
        with pytest.raises(InvalidSpecError, match=r"names the Secret that holds the operator's default Vault"):
            parse_identity("ops", "u", spec, default_vault=default, operator_namespace="vso", rules=rules)
    at_default = {**NO_VAULT, "vault": {"address": "https://vault.platform:8200/",
                                        "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}
    assert parse_identity("ops", "u", at_default, default_vault=default, operator_namespace="vso",
                          rules=rules).vault.address == "https://vault.platform:8200"


def test_default_auth_applies_when_the_identity_names_the_default_address():
    spec = {**NO_VAULT, "vault": {"address": "https://vault.platform:8200/"}}
    ident = parse_identity("ops", "u", spec, default_vault=DEFAULT_VAULT, operator_namespace="vso", rules=RULES)
    assert ident.vault == DEFAULT_VAULT


def test_own_address_with_own_auth_keeps_nothing_of_the_default():
    spec = {**NO_VAULT, "vault": {"address": "https://other:8200", "auth": {"kubernetes": {"role": "r"}}}}
    ident = parse_identity("ops", "u", spec, default_vault=DEFAULT_VAULT, operator_namespace="vso", rules=RULES)
    assert ident.vault == VaultConnection(address="https://other:8200", auth=KubernetesAuth(role="r"))


@pytest.mark.parametrize("auth", [
    {"tokenSecretRef": {"name": "t", "namespace": "kube-system", "key": "token"}},
    {"appRole": {"roleId": "r", "secretIdRef": {"name": "s", "namespace": "team-a", "key": "id"}}},
])
def test_secret_refs_outside_the_allowed_namespace_are_refused(auth):
    spec = {**NO_VAULT, "vault": {"address": "https://v:8200", "auth": auth}}
    with pytest.raises(InvalidSpecError, match=r"namespace '(kube-system|team-a)' is not allowed: .* only in vso$"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso", rules=RULES)


def test_ca_secret_ref_is_confined_too_and_a_named_namespace_widens_it():
    vault = {"address": "https://v:8200", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}},
             "caSecretRef": {"name": "ca", "namespace": "platform-secrets", "key": "ca.crt"}}
    with pytest.raises(InvalidSpecError, match=r"caSecretRef\.namespace 'platform-secrets' is not allowed"):
        parse_identity("ops", "u", {**NO_VAULT, "vault": vault}, default_vault=None, operator_namespace="vso",
                       rules=RULES)
    rules = ConnectionRules(vault_addresses=ALLOWED_VAULTS, secret_namespaces=("platform-secrets",))
    with pytest.raises(InvalidSpecError, match=r"tokenSecretRef\.namespace 'vso' is not allowed: .* platform-secrets"):
        parse_identity("ops", "u", {**NO_VAULT, "vault": vault}, default_vault=None, operator_namespace="vso",
                       rules=rules)
    vault["auth"] = {"tokenSecretRef": {"name": "t", "namespace": "platform-secrets", "key": "token"}}
    ident = parse_identity("ops", "u", {**NO_VAULT, "vault": vault}, default_vault=None, operator_namespace="vso",
                           rules=rules)
    assert ident.vault.ca_secret_ref is not None and ident.vault.ca_secret_ref.namespace == "platform-secrets"


@pytest.mark.parametrize(("vault", "sts", "where"), [
    ({"address": "http://v:8200", "auth": {"kubernetes": {"role": "r"}}}, {}, r"spec\.vault\.address"),
    ({"address": "https://v:8200", "auth": {"kubernetes": {"role": "r"}}}, {"endpoint": "http://sts:8080"},
     r"spec\.sts\.endpoint"),
])
def test_plain_http_needs_the_development_setting(vault, sts, where):
    spec = {**NO_VAULT, "vault": vault, "sts": sts}
    with pytest.raises(InvalidSpecError, match=where + r" uses http://: .*--allow-insecure-http"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso", rules=RULES)
    ident = parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso",
                           rules=ConnectionRules(vault_addresses=ALLOWED_VAULTS, allow_insecure_http=True,
                                                 sts_endpoints=("http://sts:8080", "https://sts.*.amazonaws.com")))
    assert ident.name == "ops"


def test_a_default_http_address_is_refused_too_and_other_schemes_always():
    default = VaultConnection(address="http://vault:8200", auth=KubernetesAuth(role="vso"))
    with pytest.raises(InvalidSpecError, match=r"the operator's default Vault address uses http://"):
        parse_identity("ops", "u", NO_VAULT, default_vault=default, operator_namespace="vso", rules=RULES)
    spec = {**NO_VAULT, "vault": {"address": "ftp://v", "auth": {"kubernetes": {"role": "r"}}}}
    with pytest.raises(InvalidSpecError, match=r"must be an https:// URL"):
        parse_identity("ops", "u", spec, default_vault=None, operator_namespace="vso",
                       rules=ConnectionRules(vault_addresses=ALLOWED_VAULTS, allow_insecure_http=True))
