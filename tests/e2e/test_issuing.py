"""The operator's main job on the real stack: an AssumedRoleCredential becomes a working Secret."""

from __future__ import annotations

import json
import time

import boto3
import botocore.configloader
import botocore.credentials
import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.seed import RoleSpec, seed_identity
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def team(kube, unique):
    return kube.namespace(f"team-{unique}")


@pytest.fixture
def identity(stack, kube, team, unique):
    seeded = seed_identity(stack, f"ops-{unique}", roles=[RoleSpec("app-billing-" + unique),
                                                          RoleSpec("app-report-" + unique)])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    return seeded


def sts_with(stack, key_id, secret, token):
    return boto3.client("sts", endpoint_url=stack.sts_endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret, aws_session_token=token)


def test_secret_appears_and_every_format_works(stack, kube, team, identity, issued, tmp_path):
    role = identity.role_arns[0]
    kube.create_credential(assumed_role_credential(team, "billing", identity.name, role,
                                                   target={"secretName": "billing-aws", "profile": "billing"}))
    cr = kube.wait_ready(team, "billing")
    secret = kube.secret(team, "billing-aws")
    assert secret is not None
    issued.add_secret(secret)
    data = secret["data"]
    assert set(data) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_CREDENTIAL_EXPIRATION", "credentials", "credential_process.json"}
    # Owned by the CR, annotated with the issue record; status shows only the public half.
    owner = secret["metadata"].owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("AssumedRoleCredential", "billing", cr["metadata"]["uid"])
    assert secret["metadata"].annotations["vaultsts.io/access-key-id"] == data["AWS_ACCESS_KEY_ID"]
    status = cr["status"]
    assert status["accessKeyId"] == data["AWS_ACCESS_KEY_ID"] and status["secretName"] == "billing-aws"
    assert status["expiration"] == data["AWS_CREDENTIAL_EXPIRATION"]
    assert data["AWS_SECRET_ACCESS_KEY"] not in json.dumps(cr)

    # envFrom keys
    who = sts_with(stack, data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"],
                   data["AWS_SESSION_TOKEN"]).get_caller_identity()
    expected_arn = f"arn:aws:sts::{identity.account}:assumed-role/{role.split('/')[-1]}/{team}@billing"
    assert who["Arn"] == expected_arn == status["assumedRoleArn"]

    # the credentials file, through botocore's own shared-credentials provider
    creds_file = tmp_path / "credentials"
    creds_file.write_text(data["credentials"])
    loaded = botocore.credentials.SharedCredentialProvider(str(creds_file), profile_name="billing").load()
    assert loaded.access_key == data["AWS_ACCESS_KEY_ID"] and loaded.token == data["AWS_SESSION_TOKEN"]

    # credential_process, as an SDK configured with `credential_process = cat <mounted file>` runs it
    process_file = tmp_path / "credential_process.json"
    process_file.write_text(data["credential_process.json"])
    config_file = tmp_path / "config"
    config_file.write_text(f"[profile app]\ncredential_process = cat {process_file}\n")
    provider = botocore.credentials.ProcessProvider(
        profile_name="app", load_config=lambda: botocore.configloader.load_config(str(config_file)))
    from_process = provider.load().get_frozen_credentials()
    assert from_process.access_key == data["AWS_ACCESS_KEY_ID"]
    who2 = sts_with(stack, from_process.access_key, from_process.secret_key,
                    from_process.token).get_caller_identity()
    assert who2["Arn"] == expected_arn

    kube.wait_event(team, "billing", "Issued", lambda e: e.reason == "Issued")


def test_many_credentials_in_session_mode_spend_one_code(stack, kube, team, identity, emulator_admin, issued):
    before = emulator_admin.counters()["codes_accepted_by_serial"].get(identity.mfa_serial, 0)
    names = [f"app-{i}" for i in range(6)]
    for i, name in enumerate(names):
        kube.create_credential(assumed_role_credential(team, name, identity.name, identity.role_arns[i % 2]))
    for name in names:
        kube.wait_ready(team, name)
        issued.add_secret(kube.secret(team, name))
    after = emulator_admin.counters()["codes_accepted_by_serial"].get(identity.mfa_serial, 0)
    assert after - before == 1
    key_ids = {kube.secret(team, n)["data"]["AWS_ACCESS_KEY_ID"] for n in names}
    assert len(key_ids) == len(names)


def test_direct_mode_never_reuses_a_code(stack, kube, team, unique, emulator_admin, issued):
    seeded = seed_identity(stack, f"direct-{unique}", totp_period=3, roles=[RoleSpec("app-direct-" + unique)])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team], mfa_modes=["session", "direct"]))
    names = [f"direct-{i}" for i in range(3)]
    for name in names:
        kube.create_credential(assumed_role_credential(team, name, seeded.name, seeded.role_arns[0], mfa="direct",
                                                       durationSeconds=7200))
    for name in names:
        kube.wait_ready(team, name, timeout=90)
        issued.add_secret(kube.secret(team, name))
    counters = emulator_admin.counters()
    steps = [c["step"] for c in counters["accepted_codes"] if c["serial"] == seeded.mfa_serial]
    assert len(steps) == 3 and len(set(steps)) == 3
    assert counters["codes_refused_by_serial"].get(seeded.mfa_serial, 0) == 0


def test_spec_change_reissues_and_rotate_annotation_rotates(stack, kube, team, identity, issued):
    kube.create_credential(assumed_role_credential(team, "report", identity.name, identity.role_arns[1]))
    first = kube.wait_ready(team, "report")["status"]["accessKeyId"]
    kube.patch_credential(team, "report", {"metadata": {"annotations": {"vaultsts.io/rotate": "now-1"}}})
    second = wait_for("rotation on request",
                      lambda: (k := kube.credential(team, "report")["status"].get("accessKeyId")) != first and k)
    kube.patch_credential(team, "report", {"spec": {"durationSeconds": 900}})
    third = wait_for("reissue on spec change",
                     lambda: (k := kube.credential(team, "report")["status"].get("accessKeyId")) != second and k)
    secret = kube.secret(team, "report")
    issued.add_secret(secret)
    assert secret["data"]["AWS_ACCESS_KEY_ID"] == third


def test_rotation_before_expiry_then_restart_does_not_reissue(stack, kube, team, identity, operator, emulator_admin,
                                                             issued):
    kube.create_credential(assumed_role_credential(team, "short", identity.name, identity.role_arns[0],
                                                   durationSeconds=900, renewBefore="14m45s"))
    first = kube.wait_ready(team, "short")["status"]
    first_secret = kube.secret(team, "short")
    issued.add_secret(first_secret)
    rotated = wait_for("rotation before expiry", lambda: (
        s := kube.secret(team, "short")) and s["data"]["AWS_ACCESS_KEY_ID"] != first["accessKeyId"] and s,
        timeout=60)
    issued.add_secret(rotated)
    assert rotated["data"]["AWS_SECRET_ACCESS_KEY"] != first_secret["data"]["AWS_SECRET_ACCESS_KEY"]
    kube.wait_event(team, "short", "Rotated", lambda e: e.reason == "Rotated")

    # A long-lived one survives an operator restart without being issued again.
    kube.create_credential(assumed_role_credential(team, "steady", identity.name, identity.role_arns[0]))
    steady = kube.wait_ready(team, "steady")["status"]["accessKeyId"]
    kube.delete_credential(team, "short")
    issued_at = kube.credential(team, "steady")["status"]["issuedAt"]
    operator.restart()
    # The restarted operator schedules it from status.renewalTime: nothing is read or issued.
    time.sleep(8)
    since_restart = operator.log_text().split("==== start #")[-1]
    assert "into Secret steady" not in since_restart
    assert kube.secret(team, "steady")["data"]["AWS_ACCESS_KEY_ID"] == steady
    status = kube.credential(team, "steady")["status"]
    assert status["issuedAt"] == issued_at and status["accessKeyId"] == steady


def test_deleting_the_credential_deletes_its_secret(stack, kube, team, identity, issued):
    kube.create_credential(assumed_role_credential(team, "gone", identity.name, identity.role_arns[0]))
    kube.wait_ready(team, "gone")
    issued.add_secret(kube.secret(team, "gone"))
    kube.delete_credential(team, "gone")
    wait_for("garbage collection of the Secret", lambda: kube.secret(team, "gone") is None, timeout=60)


def test_no_finalizer_and_a_legacy_one_is_removed(stack, kube, team, identity, issued):
    """No finalizer on new CRs; one left by an operator version with a daemon per CR is removed, so
    such a CR can still be deleted (its Secret goes by owner reference)."""
    kube.create_credential(assumed_role_credential(team, "fresh", identity.name, identity.role_arns[0]))
    assert not kube.wait_ready(team, "fresh")["metadata"].get("finalizers")
    legacy = assumed_role_credential(team, "legacy", identity.name, identity.role_arns[0])
    legacy["metadata"]["finalizers"] = ["vaultsts.io/kopf-finalizer"]
    kube.create_credential(legacy)
    kube.wait_ready(team, "legacy")
    issued.add_secret(kube.secret(team, "legacy"))
    wait_for("the legacy finalizer removed",
             lambda: not kube.credential(team, "legacy")["metadata"].get("finalizers"), timeout=30)
    kube.delete_credential(team, "legacy")

    def names() -> set[str]:
        listed = kube.custom.list_namespaced_custom_object("vaultsts.io", "v1alpha1", team, "assumedrolecredentials")
        return {c["metadata"]["name"] for c in listed["items"]}

    wait_for("the CR deleted", lambda: "legacy" not in names(), timeout=30)
    wait_for("garbage collection of its Secret", lambda: kube.secret(team, "legacy") is None, timeout=60)
