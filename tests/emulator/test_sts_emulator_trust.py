"""Trust policies in the emulator: sts:TagSession and sts:SetSourceIdentity actions, conditions on
sts:SourceIdentity, aws:RequestTag/*, aws:PrincipalTag/*, sts:RoleSessionName and sts:ExternalId, with AWS's
error codes and wording. Driven with boto3, as the operator drives it."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from sts_emulator_support import ACCOUNT, ROOT, Identity, current_code, from_credentials

from devstack.sts_emulator.admin import EmulatorAdmin, EmulatorAdminError

ROLE = f"arn:aws:iam::{ACCOUNT}:role/team-a-app"
CHAINED = f"arn:aws:iam::{ACCOUNT}:role/team-a-data"


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response: Any = excinfo.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def denied(caller: str, action: str, role: str = ROLE) -> tuple[str, str, int]:
    return ("AccessDenied", f"User: {caller} is not authorized to perform: {action} on resource: {role}", 403)


def trust(principal: str | list[str], actions: list[str], condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


TENANT_TRUST = {
    "StringEquals": {"aws:RequestTag/vaultsts:namespace": "team-a", "sts:ExternalId": "acme-team-a"},
    "StringLike": {"sts:SourceIdentity": "team-a@*", "sts:RoleSessionName": "team-a@*"},
    # the namespace tag must be transitive (ForAllValues would only say "no other key is")
    "ForAnyValue:StringEquals": {"sts:TransitiveTagKeys": "vaultsts:namespace"},
}


def assume(identity: Identity, namespace: str = "team-a", **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "RoleArn": ROLE, "RoleSessionName": f"{namespace}@billing", "ExternalId": f"acme-{namespace}",
        "SourceIdentity": f"{namespace}@billing",
        "Tags": [{"Key": "vaultsts:namespace", "Value": namespace}, {"Key": "vaultsts:credential", "Value": "billing"}],
        "TransitiveTagKeys": ["vaultsts:namespace", "vaultsts:credential"],
    }
    params.update(extra)
    return dict(identity.client.assume_role(**{k: v for k, v in params.items() if v is not None}))


@pytest.fixture
def tenant_role(admin: EmulatorAdmin, identity: Identity) -> str:
    admin.create_role(ROLE, [], trust_policy=trust(identity.user_arn, ["sts:AssumeRole", "sts:TagSession",
                                                                      "sts:SetSourceIdentity"], TENANT_TRUST))
    return ROLE


def test_the_namespace_the_operator_sends_is_accepted_and_recorded(admin, identity, tenant_role):
    result = assume(identity)
    assert result["SourceIdentity"] == "team-a@billing"
    facts = admin.credential(result["Credentials"]["AccessKeyId"])
    assert facts["session_tags"] == {"vaultsts:namespace": "team-a", "vaultsts:credential": "billing"}
    assert facts["transitive_tag_keys"] == ["vaultsts:credential", "vaultsts:namespace"]
    assert facts["source_identity"] == "team-a@billing" and facts["session_name"] == "team-a@billing"


@pytest.mark.parametrize("change", [
    {"Tags": [{"Key": "vaultsts:namespace", "Value": "team-b"}, {"Key": "vaultsts:credential", "Value": "x"}]},
    {"Tags": [{"Key": "VaultSTS:Namespace", "Value": "team-b"}, {"Key": "vaultsts:credential", "Value": "x"}]},
    {"SourceIdentity": "team-b@billing"},
    {"SourceIdentity": None},
    {"RoleSessionName": "team-b@billing"},
    {"ExternalId": "acme-team-b"},
    {"ExternalId": None},
    {"TransitiveTagKeys": ["vaultsts:credential"]},
    {"TransitiveTagKeys": None},
])
def test_another_namespace_fails_each_condition(admin, identity, tenant_role, change):
    issued = admin.counters()["issued"]
    with pytest.raises(ClientError) as excinfo:
        assume(identity, **change)
    assert error_of(excinfo) == denied(identity.user_arn, "sts:AssumeRole")
    assert admin.counters()["issued"] == issued


def test_tag_keys_in_conditions_are_case_insensitive(admin, identity, tenant_role):
    result = assume(identity, Tags=[{"Key": "VAULTSTS:NAMESPACE", "Value": "team-a"},
                                    {"Key": "vaultsts:credential", "Value": "billing"}])
    assert result["Credentials"]["AccessKeyId"].startswith("ASIA")


def test_tags_need_sts_tag_session(admin, identity):
    admin.create_role(ROLE, [], trust_policy=trust(identity.user_arn, ["sts:AssumeRole", "sts:SetSourceIdentity"]))
    with pytest.raises(ClientError) as excinfo:
        assume(identity)
    assert error_of(excinfo) == denied(identity.user_arn, "sts:TagSession")
    assert assume(identity, Tags=None, TransitiveTagKeys=None)["SourceIdentity"] == "team-a@billing"


def test_source_identity_needs_sts_set_source_identity(admin, identity):
    admin.create_role(ROLE, [], trust_policy=trust(identity.user_arn, ["sts:AssumeRole", "sts:TagSession"]))
    with pytest.raises(ClientError) as excinfo:
        assume(identity)
    assert error_of(excinfo) == denied(identity.user_arn, "sts:SetSourceIdentity")
    assert "SourceIdentity" not in assume(identity, SourceIdentity=None)


def test_an_explicit_deny_wins(admin, identity):
    document = trust(identity.user_arn, ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"])
    document["Statement"].append({"Effect": "Deny", "Principal": {"AWS": ROOT}, "Action": "sts:AssumeRole",
                                  "Condition": {"StringLike": {"sts:RoleSessionName": "team-a@*"}}})
    admin.create_role(ROLE, [], trust_policy=document)
    with pytest.raises(ClientError) as excinfo:
        assume(identity)
    assert error_of(excinfo) == denied(identity.user_arn, "sts:AssumeRole")
    assert assume(identity, RoleSessionName="other@x")["Credentials"]["AccessKeyId"]


def test_chained_sessions_keep_transitive_tags_and_source_identity(admin, identity, tenant_role, sts_client):
    """The second role trusts the first for sessions whose aws:PrincipalTag and aws:SourceIdentity name team-a."""
    untagged_role = f"arn:aws:iam::{ACCOUNT}:role/untagged"
    admin.create_role(untagged_role, [identity.user_arn])
    admin.create_role(CHAINED, [], trust_policy=trust([ROLE, untagged_role], ["sts:AssumeRole", "sts:TagSession",
                                                             "sts:SetSourceIdentity"], {
        "StringEquals": {"aws:PrincipalTag/vaultsts:namespace": "team-a"},
        "StringLike": {"aws:SourceIdentity": "team-a@*"}}))
    first = assume(identity)
    chained_client = from_credentials(sts_client, first["Credentials"])
    # the tenant tries to overwrite the transitive tag and the source identity further down the chain
    with pytest.raises(ClientError) as excinfo:
        chained_client.assume_role(RoleArn=CHAINED, RoleSessionName="next",
                                   Tags=[{"Key": "VaultSTS:Namespace", "Value": "team-b"}])
    assert error_of(excinfo)[0] == "InvalidParameterValue" and error_of(excinfo)[2] == 400
    second = chained_client.assume_role(RoleArn=CHAINED, RoleSessionName="next", SourceIdentity="team-b@x")
    facts = admin.credential(second["Credentials"]["AccessKeyId"])
    assert facts["source_identity"] == "team-a@billing"
    assert facts["session_tags"]["vaultsts:namespace"] == "team-a"
    # a session without the tags (another tenant's, or an untagged one) is refused
    plain = assume(identity, RoleArn=untagged_role, Tags=None, TransitiveTagKeys=None)
    with pytest.raises(ClientError) as excinfo:
        from_credentials(sts_client, plain["Credentials"]).assume_role(RoleArn=CHAINED, RoleSessionName="next")
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/untagged/team-a@billing"
    assert error_of(excinfo) == denied(caller, "sts:AssumeRole", CHAINED)


def test_mfa_conditions_in_a_trust_policy(admin, identity):
    admin.create_role(ROLE, [], trust_policy=trust(identity.user_arn, ["sts:AssumeRole"], {
        "Bool": {"aws:MultiFactorAuthPresent": "true"}, "NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}))
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE, RoleSessionName="team-a@x")
    assert error_of(excinfo) == denied(identity.user_arn, "sts:AssumeRole")
    assert admin.counters()["codes_accepted"] == 0
    result = identity.client.assume_role(RoleArn=ROLE, RoleSessionName="team-a@x",
                                         SerialNumber=identity.device.serial,
                                         TokenCode=current_code(admin, identity.device))
    assert admin.credential(result["Credentials"]["AccessKeyId"])["mfa_authenticated"]


def test_a_refused_trust_policy_spends_no_code(admin, identity, tenant_role):
    with pytest.raises(ClientError) as excinfo:
        assume(identity, namespace="team-b", SerialNumber=identity.device.serial,
               TokenCode=current_code(admin, identity.device))
    assert error_of(excinfo)[0] == "AccessDenied"
    assert admin.counters()["codes_accepted"] == 0


def test_bad_tags_are_validation_errors(identity, tenant_role):
    with pytest.raises(ClientError) as excinfo:
        assume(identity, Tags=[{"Key": "k" * 129, "Value": "v"}])
    code, message, status = error_of(excinfo)
    assert (code, status) == ("ValidationError", 400)
    assert message.endswith("Member must have length less than or equal to 128")
    with pytest.raises(ClientError) as excinfo:
        assume(identity, Tags=[{"Key": "bad key!", "Value": "v"}])
    assert error_of(excinfo)[0] == "ValidationError" and "tags.1.member.key" in error_of(excinfo)[1]


@pytest.mark.parametrize("document", [
    {"Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "sts:AssumeRole",
                    "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}]},
    {"Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceIp": "10.0.0.1"}}}]},
    {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
    {"Statement": []},
])
def test_trust_policies_the_emulator_cannot_evaluate_are_refused(admin, document):
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_role(ROLE, [], trust_policy=document)
    assert excinfo.value.status == 400


def test_the_documented_trust_policies_work(admin, identity, sts_client):
    """docs/examples: the tenant role's and the chained role's trust policies, as the docs show them."""
    import json
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "docs" / "examples"
    tenant = json.loads((examples / "trust-policy-tenant-role.json").read_text())
    tenant["Statement"][0]["Principal"]["AWS"] = identity.user_arn
    admin.create_role(ROLE, [], trust_policy=tenant)
    chained = json.loads((examples / "trust-policy-chained-role.json").read_text())
    assert chained["Statement"][0]["Principal"]["AWS"] == ROLE
    admin.create_role(CHAINED, [], trust_policy=chained)
    mfa = {"SerialNumber": identity.device.serial}
    with pytest.raises(ClientError) as excinfo:  # no MFA: refused
        assume(identity)
    assert error_of(excinfo) == denied(identity.user_arn, "sts:AssumeRole")
    with pytest.raises(ClientError) as excinfo:  # team-b's values: refused before the code is checked
        assume(identity, namespace="team-b", TokenCode=current_code(admin, identity.device), **mfa)
    assert error_of(excinfo) == denied(identity.user_arn, "sts:AssumeRole")
    first = assume(identity, TokenCode=current_code(admin, identity.device), **mfa)
    second = from_credentials(sts_client, first["Credentials"]).assume_role(RoleArn=CHAINED, RoleSessionName="next")
    assert admin.credential(second["Credentials"]["AccessKeyId"])["source_identity"] == "team-a@billing"
