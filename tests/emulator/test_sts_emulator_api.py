"""Identity, authentication, counters, faults, admin API, logs and persistence, through boto3."""

from __future__ import annotations

import http.client
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pyotp
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from sts_emulator_support import (
    ACCOUNT,
    ROLE_MFA,
    ROLE_PLAIN,
    Emulator,
    Identity,
    StsFactory,
    current_code,
    from_credentials,
    start_emulator,
    stop_emulator,
)

from devstack.sts_emulator.admin import EmulatorAdmin, EmulatorAdminError

EXPIRED = "The security token included in the request is expired"
INVALID_TOKEN = "The security token included in the request is invalid."


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response: Any = excinfo.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_caller_identity_of_user_session_and_role(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    me = identity.client.get_caller_identity()
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/ops"
    assert me["Account"] == ACCOUNT
    assert me["UserId"].startswith("AIDA")

    session = identity.client.get_session_token(
        SerialNumber=identity.device.serial, TokenCode=current_code(admin, identity.device)
    )
    as_session = from_credentials(sts_client, session["Credentials"]).get_caller_identity()
    assert (as_session["Arn"], as_session["UserId"]) == (me["Arn"], me["UserId"])

    assumed = identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="team-a-billing")
    as_role = from_credentials(sts_client, assumed["Credentials"]).get_caller_identity()
    assert as_role["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-plain/team-a-billing"
    assert as_role["UserId"] == assumed["AssumedRoleUser"]["AssumedRoleId"]
    assert as_role["UserId"].startswith("AROA") and as_role["UserId"].endswith(":team-a-billing")


def test_partitions_other_than_aws(admin: EmulatorAdmin, sts_client: StsFactory) -> None:
    user = admin.create_user("cn-ops", account="210987654321", partition="aws-cn")
    assert user["arn"] == "arn:aws-cn:iam::210987654321:user/cn-ops"
    key = admin.create_access_key("cn-ops")
    role = "arn:aws-cn:iam::210987654321:role/path/app"
    admin.create_role(role, ["arn:aws-cn:iam::210987654321:root"])
    client = sts_client(key["AccessKeyId"], key["SecretAccessKey"])
    assert client.get_caller_identity()["Arn"] == user["arn"]
    result = client.assume_role(RoleArn=role, RoleSessionName="s1")
    assert result["AssumedRoleUser"]["Arn"] == "arn:aws-cn:sts::210987654321:assumed-role/app/s1"
    gov_role = "arn:aws-us-gov:iam::210987654321:role/app"
    admin.create_role(gov_role, ["arn:aws-us-gov:iam::210987654321:root"])
    with pytest.raises(ClientError) as excinfo:  # a root of another partition is not this user's account
        client.assume_role(RoleArn=gov_role, RoleSessionName="s1")
    assert error_of(excinfo)[0] == "AccessDenied"


def test_expired_token_after_forced_expiry(admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory) -> None:
    assumed = identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1")
    client = from_credentials(sts_client, assumed["Credentials"])
    client.get_caller_identity()
    admin.expire(assumed["Credentials"]["AccessKeyId"])
    with pytest.raises(ClientError) as excinfo:
        client.get_caller_identity()
    assert error_of(excinfo) == ("ExpiredToken", EXPIRED, 400)
    assert admin.credential(assumed["Credentials"]["AccessKeyId"])["expired"] is True


def test_expired_token_after_natural_expiry(admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory) -> None:
    session = identity.client.get_session_token(DurationSeconds=900)
    client = from_credentials(sts_client, session["Credentials"])
    admin.advance_clock(890)
    client.get_caller_identity()
    admin.advance_clock(11)
    with pytest.raises(ClientError) as excinfo:
        client.get_caller_identity()
    assert error_of(excinfo) == ("ExpiredToken", EXPIRED, 400)
    identity.client.get_caller_identity()  # long-term keys never expire


def test_lifetime_cap_knob_shortens_a_roles_sessions(admin: EmulatorAdmin, identity: Identity) -> None:
    """A test knob (not AWS): the SDKs' refresh windows are minutes, so Pod Identity's rotation tests need
    sessions that end in minutes; the cap applies to the one role only and is lifted with None."""
    admin.set_lifetime_cap(ROLE_PLAIN, 300)
    capped = identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1", DurationSeconds=3600)
    left = capped["Credentials"]["Expiration"].timestamp() - time.time()
    assert 290 < left <= 300
    held = admin.issued_for_role(ROLE_PLAIN)
    assert [c["AccessKeyId"] for c in held] == [capped["Credentials"]["AccessKeyId"]]
    assert held[0]["SecretAccessKey"] == capped["Credentials"]["SecretAccessKey"]
    admin.set_lifetime_cap(ROLE_PLAIN, None)
    normal = identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1", DurationSeconds=3600)
    assert normal["Credentials"]["Expiration"].timestamp() - time.time() > 3500
    with pytest.raises(EmulatorAdminError):
        admin.set_lifetime_cap(ROLE_PLAIN, 5)


def test_bad_signature_unknown_key_and_wrong_token(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    with pytest.raises(ClientError) as excinfo:
        sts_client(identity.key_id, "x" * 40).get_caller_identity()
    code, message, status = error_of(excinfo)
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert message.startswith("The request signature we calculated does not match the signature you provided.")

    with pytest.raises(ClientError) as excinfo:
        sts_client("AKIAUNKNOWNUNKNOWN00", "x" * 40).get_caller_identity()
    assert error_of(excinfo) == ("InvalidClientTokenId", INVALID_TOKEN, 403)

    assumed = identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1")
    creds = assumed["Credentials"]
    for token in (creds["SessionToken"][:-4] + "AAAA", None):
        with pytest.raises(ClientError) as excinfo:
            sts_client(creds["AccessKeyId"], creds["SecretAccessKey"], token).get_caller_identity()
        assert error_of(excinfo) == ("InvalidClientTokenId", INVALID_TOKEN, 403)

    admin.delete_access_key("ops", identity.key_id)
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_caller_identity()
    assert error_of(excinfo) == ("InvalidClientTokenId", INVALID_TOKEN, 403)


def test_fixed_access_key_values(admin: EmulatorAdmin, sts_client: StsFactory) -> None:
    admin.create_user("fixed")
    key = admin.create_access_key("fixed", "AKIAFIXEDFIXEDFIXED0", "s" * 40)
    assert key == {"AccessKeyId": "AKIAFIXEDFIXEDFIXED0", "SecretAccessKey": "s" * 40}
    assert sts_client(key["AccessKeyId"], "s" * 40).get_caller_identity()["Arn"].endswith(":user/fixed")


def _raw_request(emulator: Emulator, creds: Credentials, body: bytes, sign_content_length: bool) -> tuple[int, str]:
    """Sign like aws-sdk-go v1 (content-length and content-type signed), send with http.client."""
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if sign_content_length:
        headers["Content-Length"] = str(len(body))
    request = AWSRequest(method="POST", url=emulator.url + "/", data=body, headers=headers)
    SigV4Auth(creds, "sts", "us-east-1").add_auth(request)
    parts = urlsplit(emulator.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


def test_go_sdk_style_signed_headers(admin: EmulatorAdmin, identity: Identity, emulator: Emulator) -> None:
    creds = Credentials(identity.key_id, identity.secret)
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    status, text = _raw_request(emulator, creds, body, sign_content_length=True)
    assert status == 200, text
    assert f"<Arn>{identity.user_arn}</Arn>" in text
    assert text.startswith('<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">')

    code = current_code(admin, identity.device)
    body = (
        "Action=AssumeRole&DurationSeconds=900&RoleArn=" + ROLE_MFA.replace(":", "%3A").replace("/", "%2F")
        + "&RoleSessionName=vault-1&SerialNumber=" + identity.device.serial.replace(":", "%3A").replace("/", "%2F")
        + f"&TokenCode={code}&Version=2011-06-15"
    ).encode()
    status, text = _raw_request(emulator, creds, body, sign_content_length=True)
    assert status == 200, text
    assert "<AssumeRoleResult>" in text and "<SessionToken>" in text

    status, text = _raw_request(emulator, Credentials(identity.key_id, "y" * 40), body, sign_content_length=True)
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text and "<Type>Sender</Type>" in text


def test_counters(admin: EmulatorAdmin, identity: Identity) -> None:
    code = current_code(admin, identity.device)
    identity.client.get_caller_identity()
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
    with pytest.raises(ClientError):
        identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
    identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1")
    counters = admin.counters()
    assert counters["calls"] == {"AssumeRole": 1, "GetSessionToken": 2, "GetCallerIdentity": 1}
    assert counters["codes_accepted"] == 1
    assert counters["codes_refused"] == 1
    assert counters["codes_accepted_by_serial"] == {identity.device.serial: 1}
    assert [entry["serial"] for entry in counters["accepted_codes"]] == [identity.device.serial]
    assert counters["errors"] == {"AccessDenied": 1}
    assert counters["issued"] == 2
    assert code not in str(counters)
    admin.reset_counters()
    assert admin.counters()["calls"] == {"AssumeRole": 0, "GetSessionToken": 0, "GetCallerIdentity": 0}


def test_throttle_fault_then_recovery_and_code_not_consumed(admin: EmulatorAdmin, identity: Identity) -> None:
    admin.add_fault("throttle", action="GetSessionToken", count=2)
    code = current_code(admin, identity.device)
    for _ in range(2):
        with pytest.raises(ClientError) as excinfo:
            identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
        assert error_of(excinfo) == ("Throttling", "Rate exceeded", 400)
    identity.client.get_caller_identity()  # other actions are not affected
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)  # same code, accepted
    counters = admin.counters()
    assert counters["calls"]["GetSessionToken"] == 3
    assert counters["codes_accepted"] == 1
    assert counters["errors"] == {"Throttling": 2}
    assert admin.faults() == []


def test_targeted_fault_spares_other_devices_and_counts_by_target(admin: EmulatorAdmin, identity: Identity) -> None:
    other = "arn:aws:iam::123456789012:mfa/someone-else"
    admin.add_fault("throttle", action="GetSessionToken", count=1, target=other)
    assert admin.faults()[0]["target"] == other
    code = current_code(admin, identity.device)
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)  # not this device's
    assert len(admin.faults()) == 1  # the fault is still waiting for its own device
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(SerialNumber=other, TokenCode="123456")
    assert error_of(excinfo)[0] == "Throttling"
    assert admin.faults() == []
    by_target = admin.counters()["calls_by_target"]
    assert by_target[f"GetSessionToken {identity.device.serial}"] == 1
    assert by_target[f"GetSessionToken {other}"] == 1  # counted on arrival, faulted or not


@pytest.mark.parametrize(("status", "code"), [(500, "InternalFailure"), (503, "ServiceUnavailable")])
def test_server_error_fault(admin: EmulatorAdmin, identity: Identity, status: int, code: str) -> None:
    admin.add_fault("5xx", status=status)  # every action, until cleared
    mfa_code = current_code(admin, identity.device)
    for _ in range(3):
        with pytest.raises(ClientError) as excinfo:
            identity.client.assume_role(
                RoleArn=ROLE_MFA, RoleSessionName="s1", SerialNumber=identity.device.serial, TokenCode=mfa_code
            )
        assert error_of(excinfo)[0] == code
        assert error_of(excinfo)[2] == status
    admin.clear_faults()
    identity.client.assume_role(
        RoleArn=ROLE_MFA, RoleSessionName="s1", SerialNumber=identity.device.serial, TokenCode=mfa_code
    )
    assert admin.counters()["calls"]["AssumeRole"] == 4


def test_latency_fault(admin: EmulatorAdmin, identity: Identity) -> None:
    admin.add_fault("latency", action="GetCallerIdentity", latency_s=0.6, count=1)
    started = time.monotonic()
    identity.client.get_caller_identity()
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    identity.client.get_caller_identity()
    assert time.monotonic() - started < 0.5


def test_latency_fault_hits_client_read_timeout(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    admin.add_fault("latency", latency_s=1.5, count=1)
    client = sts_client(identity.key_id, identity.secret, read_timeout=0.5, connect_timeout=2)
    with pytest.raises(Exception, match="Read timeout"):
        client.get_caller_identity()


def test_admin_credential_facts_never_show_secrets(admin: EmulatorAdmin, identity: Identity) -> None:
    assumed = identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1")
    facts = admin.credential(assumed["Credentials"]["AccessKeyId"])
    assert facts["kind"] == "assumed-role"
    assert facts["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-plain/s1"
    assert facts["mfa_authenticated"] is False
    assert abs((facts["expiration"] or 0) - assumed["Credentials"]["Expiration"].timestamp()) < 1
    text = str(facts)
    assert assumed["Credentials"]["SecretAccessKey"] not in text
    assert assumed["Credentials"]["SessionToken"] not in text
    user_facts = admin.credential(identity.key_id)
    assert (user_facts["kind"], user_facts["expiration"]) == ("user", None)
    assert identity.secret not in str(user_facts)


def test_admin_errors(admin: EmulatorAdmin) -> None:
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_access_key("nobody")
    assert excinfo.value.status == 404
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_role("arn:aws:iam::123:role/x", [])
    assert excinfo.value.status == 400
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_role(ROLE_PLAIN, [], max_session_duration=50000)
    assert excinfo.value.status == 400
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.credential("ASIANOTHINGNOTHING00")
    assert excinfo.value.status == 404
    admin.create_user("a")
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_user("a")
    assert excinfo.value.status == 409
    admin.create_mfa_device("a", serial="arn:aws:iam::123456789012:mfa/shared")
    admin.create_user("b")
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_mfa_device("b", serial="arn:aws:iam::123456789012:mfa/shared")
    assert excinfo.value.status == 409
    with pytest.raises(EmulatorAdminError) as excinfo:
        admin.create_mfa_device("a", seed="not base32!")
    assert excinfo.value.status == 400


def test_reset_wipes_everything(admin: EmulatorAdmin, identity: Identity) -> None:
    identity.client.get_caller_identity()
    admin.add_fault("throttle")
    admin.reset()
    assert admin.faults() == []
    assert admin.counters()["calls"]["GetCallerIdentity"] == 0
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_caller_identity()
    assert error_of(excinfo)[0] == "InvalidClientTokenId"


def test_log_has_one_line_per_request_and_no_secrets(
    admin: EmulatorAdmin, identity: Identity, emulator: Emulator, sts_client: StsFactory
) -> None:
    code = current_code(admin, identity.device)
    session = identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
    client = from_credentials(sts_client, session["Credentials"])
    assumed = client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="logged-session")
    with pytest.raises(ClientError):
        identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
    refused = f"action=GetSessionToken caller={identity.user_arn} status=403 result=AccessDenied"
    deadline = time.monotonic() + 5
    while refused not in emulator.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = emulator.log_text()
    assert refused in log
    assert f"action=AssumeRole caller={identity.user_arn} status=200 result=OK" in log
    secrets = [
        identity.secret,
        identity.device.seed,
        session["Credentials"]["SecretAccessKey"],
        session["Credentials"]["SessionToken"],
        assumed["Credentials"]["SecretAccessKey"],
        assumed["Credentials"]["SessionToken"],
    ]
    for secret in secrets:
        assert secret not in log
    assert re.search(rf"\b{code}\b", log) is None


def _client_for(url: str, key: dict[str, str]) -> Any:
    return boto3.client(
        "sts",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = start_emulator(tmp_path / "first.log", "--state-file", str(state))
    try:
        admin = EmulatorAdmin(first.url)
        admin.create_user("persisted")
        key = dict(admin.create_access_key("persisted"))
        device = admin.create_mfa_device("persisted")
        admin.create_role(ROLE_MFA, [f"arn:aws:iam::{ACCOUNT}:root"], require_mfa=True)
        totp_code = pyotp.TOTP(device["seed"]).now()
        client = _client_for(first.url, key)
        try:
            client.assume_role(
                RoleArn=ROLE_MFA, RoleSessionName="s1", SerialNumber=device["serial"], TokenCode=totp_code
            )
        finally:
            client.close()
    finally:
        stop_emulator(first)
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    assert key["SecretAccessKey"] in state.read_text()  # the state file is the emulator's IAM database
    second = start_emulator(tmp_path / "second.log", "--state-file", str(state))
    try:
        client = _client_for(second.url, key)
        try:
            assert client.get_caller_identity()["Arn"].endswith(":user/persisted")
            with pytest.raises(ClientError) as excinfo:  # the spent code stays spent across the restart
                client.assume_role(
                    RoleArn=ROLE_MFA, RoleSessionName="s1", SerialNumber=device["serial"], TokenCode=totp_code
                )
            assert error_of(excinfo)[0] == "AccessDenied"
        finally:
            client.close()
    finally:
        stop_emulator(second)
