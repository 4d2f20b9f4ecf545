"""AssumeRole / GetSessionToken MFA behaviour, through boto3 unchanged."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pyotp
import pytest
from botocore.exceptions import ClientError
from sts_emulator_support import (
    ACCOUNT,
    ROLE_EXTERNAL,
    ROLE_LONG,
    ROLE_MFA,
    ROLE_PLAIN,
    ROOT,
    Identity,
    StsFactory,
    align_mid_step,
    current_code,
    from_credentials,
    next_code,
    wait_for_next_step,
)

from devstack.sts_emulator.admin import EmulatorAdmin

INVALID_CODE = "MultiFactorAuthentication failed with invalid MFA one time pass code."
UNKNOWN_SERIAL = (
    "MultiFactorAuthentication failed, unable to validate MFA code. "
    "Please verify your MFA serial number is valid and associated with this user."
)
INCOMPLETE = "MultiFactorAuthentication failed, must provide both MFA serial number and one time pass code."
CHAINING = "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
MAX_SESSION = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response: Any = excinfo.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def denied(caller: str, role: str) -> str:
    return f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role}"


def wrong_code(admin: EmulatorAdmin, identity: Identity) -> str:
    now = admin.clock()["now"]
    totp = pyotp.TOTP(identity.device.seed, interval=identity.device.period)
    valid = {totp.at(now + delta * identity.device.period) for delta in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def test_assume_role_with_valid_code_succeeds(admin: EmulatorAdmin, identity: Identity) -> None:
    before = time.time()
    result = identity.client.assume_role(
        RoleArn=ROLE_MFA,
        RoleSessionName="team-a-billing",
        SerialNumber=identity.device.serial,
        TokenCode=current_code(admin, identity.device),
        DurationSeconds=7200,
    )
    creds = result["Credentials"]
    assert re.fullmatch(r"ASIA[A-Z0-9]{16}", creds["AccessKeyId"])
    assert len(creds["SecretAccessKey"]) == 40
    assert len(creds["SessionToken"]) > 100
    assert abs(creds["Expiration"].timestamp() - (before + 7200)) < 5
    assert result["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-billing/team-a-billing"
    assert re.fullmatch(r"AROA[A-Z0-9]{17}:team-a-billing", result["AssumedRoleUser"]["AssumedRoleId"])
    assert result["PackedPolicySize"] == 0


def test_same_code_twice_is_refused(admin: EmulatorAdmin, identity: Identity) -> None:
    code = current_code(admin, identity.device)
    identity.client.assume_role(
        RoleArn=ROLE_MFA, RoleSessionName="first", SerialNumber=identity.device.serial, TokenCode=code
    )
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(
            RoleArn=ROLE_MFA, RoleSessionName="second", SerialNumber=identity.device.serial, TokenCode=code
        )
    assert error_of(excinfo) == ("AccessDenied", INVALID_CODE, 403)
    # the same code is refused for GetSessionToken too: the device's step is spent
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
    assert error_of(excinfo) == ("AccessDenied", INVALID_CODE, 403)


def test_wrong_code_is_refused(admin: EmulatorAdmin, identity: Identity) -> None:
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(
            RoleArn=ROLE_MFA,
            RoleSessionName="s1",
            SerialNumber=identity.device.serial,
            TokenCode=wrong_code(admin, identity),
        )
    assert error_of(excinfo) == ("AccessDenied", INVALID_CODE, 403)


def test_codes_two_steps_away_are_refused_one_step_away_accepted(admin: EmulatorAdmin, identity: Identity) -> None:
    device = identity.device
    align_mid_step(admin, device.period)
    now = admin.clock()["now"]
    for delta in (-2, 2):
        stale = device.code_at(now + delta * device.period)
        if stale in {device.code_at(now + d * device.period) for d in (-1, 0, 1)}:
            continue  # astronomically unlikely collision; the other delta still tests
        with pytest.raises(ClientError) as excinfo:
            identity.client.get_session_token(SerialNumber=device.serial, TokenCode=stale)
        assert error_of(excinfo) == ("AccessDenied", INVALID_CODE, 403)
    previous = device.code_at(now - device.period)
    identity.client.get_session_token(SerialNumber=device.serial, TokenCode=previous)
    ahead = device.code_at(now + device.period)
    identity.client.get_session_token(SerialNumber=device.serial, TokenCode=ahead)
    # after the step ahead was spent, the current step's code is older and refused
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(SerialNumber=device.serial, TokenCode=device.code_at(now))
    assert error_of(excinfo) == ("AccessDenied", INVALID_CODE, 403)


def test_serial_of_another_user_or_unknown_is_refused(admin: EmulatorAdmin, identity: Identity) -> None:
    for serial in (identity.other_device.serial, f"arn:aws:iam::{ACCOUNT}:mfa/nobody"):
        with pytest.raises(ClientError) as excinfo:
            identity.client.assume_role(
                RoleArn=ROLE_MFA,
                RoleSessionName="s1",
                SerialNumber=serial,
                TokenCode=identity.other_device.code_at(admin.clock()["now"]),
            )
        assert error_of(excinfo) == ("AccessDenied", UNKNOWN_SERIAL, 403)
    # the other user's code was not spent by those refusals
    assert admin.counters()["codes_accepted"] == 0


def test_serial_without_code_and_code_without_serial(admin: EmulatorAdmin, identity: Identity) -> None:
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="s1", SerialNumber=identity.device.serial)
    assert error_of(excinfo) == ("AccessDenied", INCOMPLETE, 403)
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(TokenCode=current_code(admin, identity.device))
    assert error_of(excinfo) == ("AccessDenied", INCOMPLETE, 403)


@pytest.mark.parametrize(
    ("code", "constraint"),
    [
        ("12345a", "Member must satisfy regular expression pattern: [\\d]*"),
        ("1234567", "Member must have length less than or equal to 6"),
    ],
)
def test_malformed_token_code_is_a_validation_error(identity: Identity, code: str, constraint: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
    error_code, message, status = error_of(excinfo)
    assert (error_code, status) == ("ValidationError", 400)
    assert message == f"1 validation error detected: Value at 'tokenCode' failed to satisfy constraint: {constraint}"
    assert code not in message


def test_mfa_role_refuses_plain_call(identity: Identity) -> None:
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="s1")
    assert error_of(excinfo) == ("AccessDenied", denied(identity.user_arn, ROLE_MFA), 403)


def test_mfa_role_refuses_role_chained_credentials(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    # app-billing (assumed with MFA) may assume app-plain; app-plain's creds carry no MFA context
    admin.create_role(ROLE_MFA, [ROOT], require_mfa=True, max_session_duration=43200)
    billing = identity.client.assume_role(
        RoleArn=ROLE_MFA,
        RoleSessionName="hop1",
        SerialNumber=identity.device.serial,
        TokenCode=current_code(admin, identity.device),
    )
    hop1 = from_credentials(sts_client, billing["Credentials"])
    plain = hop1.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="hop2")
    assert plain["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-plain/hop2"
    for creds, caller in (
        (billing["Credentials"], f"arn:aws:sts::{ACCOUNT}:assumed-role/app-billing/hop1"),
        (plain["Credentials"], f"arn:aws:sts::{ACCOUNT}:assumed-role/app-plain/hop2"),
    ):
        client = from_credentials(sts_client, creds)
        with pytest.raises(ClientError) as excinfo:
            client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="again")
        assert error_of(excinfo) == ("AccessDenied", denied(caller, ROLE_MFA), 403)


def test_mfa_role_accepts_mfa_session_credentials(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    session = identity.client.get_session_token(
        SerialNumber=identity.device.serial, TokenCode=current_code(admin, identity.device), DurationSeconds=3600
    )
    client = from_credentials(sts_client, session["Credentials"])
    for name in ("one", "two", "three"):  # one code serves many AssumeRole calls
        result = client.assume_role(RoleArn=ROLE_MFA, RoleSessionName=name)
        assert result["AssumedRoleUser"]["Arn"].endswith(f"/app-billing/{name}")
    assert admin.counters()["codes_accepted"] == 1
    facts = admin.credential(session["Credentials"]["AccessKeyId"])
    assert facts["kind"] == "session"
    assert facts["mfa_authenticated"] is True
    assert facts["carries_mfa_context"] is True


def test_session_credentials_without_mfa_do_not_satisfy_mfa_role(identity: Identity, sts_client: StsFactory) -> None:
    session = identity.client.get_session_token()
    assert abs(session["Credentials"]["Expiration"].timestamp() - (time.time() + 43200)) < 5
    client = from_credentials(sts_client, session["Credentials"])
    with pytest.raises(ClientError) as excinfo:
        client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="s1")
    assert error_of(excinfo) == ("AccessDenied", denied(identity.user_arn, ROLE_MFA), 403)
    # but a role without an MFA condition accepts them
    client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1")


def test_role_chaining_one_hour_cap(admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory) -> None:
    session = identity.client.get_session_token(
        SerialNumber=identity.device.serial, TokenCode=current_code(admin, identity.device)
    )
    client = from_credentials(sts_client, session["Credentials"])
    with pytest.raises(ClientError) as excinfo:
        client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="s1", DurationSeconds=3601)
    assert error_of(excinfo) == ("ValidationError", CHAINING, 400)
    ok = client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="s1", DurationSeconds=3600)
    assert abs(ok["Credentials"]["Expiration"].timestamp() - (time.time() + 3600)) < 5


def test_direct_mfa_allows_up_to_max_session_duration(admin: EmulatorAdmin, identity: Identity) -> None:
    result = identity.client.assume_role(
        RoleArn=ROLE_MFA,
        RoleSessionName="s1",
        SerialNumber=identity.device.serial,
        TokenCode=current_code(admin, identity.device),
        DurationSeconds=43200,
    )
    assert abs(result["Credentials"]["Expiration"].timestamp() - (time.time() + 43200)) < 5


def test_max_session_duration(admin: EmulatorAdmin, identity: Identity) -> None:
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1", DurationSeconds=3601)
    assert error_of(excinfo) == ("ValidationError", MAX_SESSION, 400)
    # a duration error is a configuration error: it does not spend the code sent with it
    code = current_code(admin, identity.device)
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(
            RoleArn=ROLE_MFA,
            RoleSessionName="s1",
            SerialNumber=identity.device.serial,
            TokenCode=code,
            DurationSeconds=43200 + 1,
        )
    assert error_of(excinfo)[0] == "ValidationError"
    identity.client.assume_role(
        RoleArn=ROLE_MFA, RoleSessionName="s1", SerialNumber=identity.device.serial, TokenCode=code
    )
    admin.create_role(ROLE_LONG, [ROOT], max_session_duration=7200)
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_LONG, RoleSessionName="s1", DurationSeconds=7201)
    assert error_of(excinfo) == ("ValidationError", MAX_SESSION, 400)
    identity.client.assume_role(RoleArn=ROLE_LONG, RoleSessionName="s1", DurationSeconds=7200)


def test_duration_below_minimum(identity: Identity, sts_client: StsFactory) -> None:
    unvalidated = sts_client(identity.key_id, identity.secret, parameter_validation=False)
    with pytest.raises(ClientError) as excinfo:
        unvalidated.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1", DurationSeconds=899)
    assert error_of(excinfo) == (
        "ValidationError",
        "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: "
        "Member must have value greater than or equal to 900",
        400,
    )


def test_external_id(identity: Identity) -> None:
    for external_id in (None, "wrong-id"):
        kwargs = {} if external_id is None else {"ExternalId": external_id}
        with pytest.raises(ClientError) as excinfo:
            identity.client.assume_role(RoleArn=ROLE_EXTERNAL, RoleSessionName="s1", **kwargs)
        assert error_of(excinfo) == ("AccessDenied", denied(identity.user_arn, ROLE_EXTERNAL), 403)
    result = identity.client.assume_role(RoleArn=ROLE_EXTERNAL, RoleSessionName="s1", ExternalId="partner-123")
    assert result["AssumedRoleUser"]["Arn"].endswith("/partner/s1")


def test_unknown_or_untrusting_role(admin: EmulatorAdmin, identity: Identity) -> None:
    missing = f"arn:aws:iam::{ACCOUNT}:role/missing"
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=missing, RoleSessionName="s1")
    assert error_of(excinfo) == ("AccessDenied", denied(identity.user_arn, missing), 403)
    admin.create_role(ROLE_PLAIN, [f"arn:aws:iam::{ACCOUNT}:user/someone-else", "arn:aws:iam::999999999999:root"])
    code = current_code(admin, identity.device)
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(
            RoleArn=ROLE_PLAIN, RoleSessionName="s1", SerialNumber=identity.device.serial, TokenCode=code
        )
    assert error_of(excinfo) == ("AccessDenied", denied(identity.user_arn, ROLE_PLAIN), 403)
    assert admin.counters()["codes_accepted"] == 0  # an untrusting role does not spend the code


def test_role_session_name_validation(identity: Identity) -> None:
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="bad name!")
    assert error_of(excinfo) == (
        "ValidationError",
        "1 validation error detected: Value 'bad name!' at 'roleSessionName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        400,
    )
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="x" * 65)
    assert error_of(excinfo)[1].endswith("Member must have length less than or equal to 64")


def test_session_policy_tags_and_source_identity(identity: Identity) -> None:
    result = identity.client.assume_role(
        RoleArn=ROLE_PLAIN,
        RoleSessionName="s1",
        Policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
        PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
        Tags=[{"Key": "team", "Value": "a"}],
        TransitiveTagKeys=["team"],
        SourceIdentity="alice",
    )
    assert 0 < result["PackedPolicySize"] <= 100
    assert result["SourceIdentity"] == "alice"
    with pytest.raises(ClientError) as excinfo:
        identity.client.assume_role(RoleArn=ROLE_PLAIN, RoleSessionName="s1", Policy="{not json")
    assert error_of(excinfo)[0] == "MalformedPolicyDocument"


def test_get_session_token_refused_with_session_credentials(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    session = identity.client.get_session_token(DurationSeconds=900)
    client = from_credentials(sts_client, session["Credentials"])
    with pytest.raises(ClientError) as excinfo:
        client.get_session_token(SerialNumber=identity.device.serial, TokenCode=current_code(admin, identity.device))
    assert error_of(excinfo) == ("AccessDenied", "Cannot call GetSessionToken with session credentials", 403)
    assert admin.counters()["codes_accepted"] == 0
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(DurationSeconds=129601)
    assert error_of(excinfo)[0] == "ValidationError"


def test_mfa_age_limit(admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory) -> None:
    admin.create_role(ROLE_MFA, [ROOT], require_mfa=True, max_mfa_age_seconds=3600)
    session = identity.client.get_session_token(
        SerialNumber=identity.device.serial, TokenCode=current_code(admin, identity.device)
    )
    client = from_credentials(sts_client, session["Credentials"])
    client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="young")
    admin.advance_clock(3601)
    with pytest.raises(ClientError) as excinfo:
        client.assume_role(RoleArn=ROLE_MFA, RoleSessionName="old")
    assert error_of(excinfo) == ("AccessDenied", denied(identity.user_arn, ROLE_MFA), 403)
    # a fresh code sent directly proves MFA again (age 0)
    identity.client.assume_role(
        RoleArn=ROLE_MFA,
        RoleSessionName="direct",
        SerialNumber=identity.device.serial,
        TokenCode=current_code(admin, identity.device),
    )


def test_short_period_device(admin: EmulatorAdmin, identity: Identity) -> None:
    admin.set_mfa_period(identity.device.serial, 2)
    identity.device.period = 2
    wait_for_next_step(2)
    first = current_code(admin, identity.device)
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=first)
    with pytest.raises(ClientError) as excinfo:
        identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=first)
    assert error_of(excinfo) == ("AccessDenied", INVALID_CODE, 403)
    wait_for_next_step(2)
    second = current_code(admin, identity.device)
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=second)
    accepted = admin.counters()["accepted_codes"]
    assert [a["step"] for a in accepted] == sorted({a["step"] for a in accepted})
    assert accepted[1]["step"] > accepted[0]["step"]


def test_short_period_device_created_directly(admin: EmulatorAdmin, identity: Identity) -> None:
    device = admin.create_mfa_device("ops", serial=f"arn:aws:iam::{ACCOUNT}:mfa/fast", period=2)
    assert device["period"] == 2
    totp = pyotp.TOTP(device["seed"], interval=2)
    identity.client.get_session_token(SerialNumber=device["serial"], TokenCode=totp.at(admin.clock()["now"]))
    assert admin.counters()["codes_accepted_by_serial"] == {device["serial"]: 1}


def test_next_period_code_after_clock_advance(admin: EmulatorAdmin, identity: Identity) -> None:
    first = current_code(admin, identity.device)
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=first)
    second = next_code(admin, identity.device)
    identity.client.get_session_token(SerialNumber=identity.device.serial, TokenCode=second)
    assert admin.counters()["codes_accepted"] == 2


def test_concurrent_use_of_one_code_is_accepted_once(
    admin: EmulatorAdmin, identity: Identity, sts_client: StsFactory
) -> None:
    code = current_code(admin, identity.device)
    clients = [sts_client(identity.key_id, identity.secret) for _ in range(8)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def call(client: Any) -> None:
        try:
            client.get_session_token(SerialNumber=identity.device.serial, TokenCode=code)
            result = "ok"
        except ClientError as exc:
            result = exc.response["Error"]["Message"]
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=call, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 1
    assert outcomes.count(INVALID_CODE) == 7
