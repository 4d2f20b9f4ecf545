import json
from datetime import UTC, datetime

import botocore.configloader

from vault_sts_operator.api.specs import parse_credential
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.outputs.secret_data import render_secret_data
from vault_sts_operator.outputs.secret_manifest import build_secret, owner_of
from vault_sts_operator.services.secret_writer import ownership_problem

CREDS = TemporaryCredentials(access_key_id="ASIAAAAAAAAAAAAAAAAA", secret_access_key="s" * 40,
                             session_token="tok/en+==", expiration=datetime(2026, 11, 24, 13, 0, tzinfo=UTC),
                             assumed_role_arn="arn:aws:sts::123456789012:assumed-role/app/team-a-billing")


def test_repr_hides_secret_halves():
    text = repr(CREDS)
    assert "ASIAAAAAAAAAAAAAAAAA" in text
    assert "s" * 40 not in text and "tok/en" not in text


def test_credentials_file_parses_with_botocore(tmp_path):
    data = render_secret_data(CREDS, "billing")
    path = tmp_path / "credentials"
    path.write_text(data["credentials"])
    parsed = botocore.configloader.raw_config_parse(str(path))
    assert parsed["billing"] == {"aws_access_key_id": CREDS.access_key_id,
                                 "aws_secret_access_key": CREDS.secret_access_key,
                                 "aws_session_token": CREDS.session_token}


def test_credential_process_and_env_keys():
    data = render_secret_data(CREDS, "default")
    doc = json.loads(data["credential_process.json"])
    assert doc == {"Version": 1, "AccessKeyId": CREDS.access_key_id, "SecretAccessKey": CREDS.secret_access_key,
                   "SessionToken": CREDS.session_token, "Expiration": "2026-11-24T13:00:00Z"}
    assert data["AWS_CREDENTIAL_EXPIRATION"] == "2026-11-24T13:00:00Z"
    assert data["AWS_SESSION_TOKEN"] == CREDS.session_token


def test_secret_manifest_owner_labels_record():
    spec = parse_credential("team-a", "billing", {
        "identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/app-billing",
        "target": {"secretName": "billing-aws", "labels": {"team": "a"}}})
    rec = IssuedRecord(issued_at=datetime(2026, 11, 24, 12, tzinfo=UTC), expiration=CREDS.expiration,
                       spec_hash=spec.issuance_hash(), rotate_request="", access_key_id=CREDS.access_key_id,
                       assumed_role_arn=CREDS.assumed_role_arn)
    secret = build_secret(spec=spec, owner_uid="uid-1", creds=CREDS, record=rec)
    meta = secret["metadata"]
    assert meta["name"] == "billing-aws" and meta["namespace"] == "team-a"
    assert meta["labels"]["team"] == "a" and meta["labels"]["app.kubernetes.io/managed-by"] == "vault-sts-operator"
    assert meta["annotations"]["vaultsts.io/expiration"] == "2026-11-24T13:00:00Z"
    assert owner_of(meta) == ("billing", "uid-1")
    assert ownership_problem(secret, spec, "uid-1") is None
    assert "belongs to AssumedRoleCredential 'billing'" in ownership_problem(secret, spec, "uid-2")
    foreign = {"metadata": {"name": "billing-aws"}}
    assert "not created by vault-sts-operator" in ownership_problem(foreign, spec, "uid-1")
    assert ownership_problem(None, spec, "uid-1") is None
