"""IAM CreateVirtualMFADevice and EnableMFADevice on the emulator through boto3's iam client: the
enrolment works, the enabled device guards STS calls, and mistakes get AWS's error codes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pyotp
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sts_emulator_support import ACCOUNT, Emulator

from devstack.sts_emulator.admin import EmulatorAdmin


@pytest.fixture
def admin_user(admin: EmulatorAdmin) -> dict[str, str]:
    admin.create_user("admin")
    admin.create_user("ops")
    return admin.create_access_key("admin")


@pytest.fixture
def iam(emulator: Emulator, admin_user: dict[str, str]) -> Iterator[Any]:
    client = boto3.client("iam", endpoint_url=emulator.url, region_name="us-east-1",
                          aws_access_key_id=admin_user["AccessKeyId"],
                          aws_secret_access_key=admin_user["SecretAccessKey"],
                          config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    yield client
    client.close()


def code(error: ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


def consecutive(seed: str) -> tuple[str, str, int]:
    step = int(time.time() // 30)
    totp = pyotp.TOTP(seed)
    return totp.at(step * 30), totp.at((step + 1) * 30), step


def test_enrolment_gives_the_user_a_device_that_sts_then_demands(iam, admin, emulator):
    created = iam.create_virtual_mfa_device(VirtualMFADeviceName="ops")["VirtualMFADevice"]
    serial = created["SerialNumber"]
    assert serial == f"arn:aws:iam::{ACCOUNT}:mfa/ops"
    seed = created["Base32StringSeed"].decode()  # botocore decodes the blob: the base32 text
    assert len(seed) >= 16 and pyotp.TOTP(seed).now().isdigit()
    first, second, step = consecutive(seed)
    iam.enable_mfa_device(UserName="ops", SerialNumber=serial, AuthenticationCode1=first,
                          AuthenticationCode2=second)

    # The device now guards the user's STS calls; the two enrolment codes are spent.
    key = admin.create_access_key("ops")
    sts = boto3.client("sts", endpoint_url=emulator.url, region_name="us-east-1",
                       aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                       config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ClientError) as spent:
        sts.get_session_token(SerialNumber=serial, TokenCode=second)
    assert code(spent.value) == ("AccessDenied", 403)
    while int(time.time() // 30) <= step:  # wait for the step after the enrolment's last one
        time.sleep(0.5)
    fresh = pyotp.TOTP(seed).at((step + 2) * 30)
    assert sts.get_session_token(SerialNumber=serial, TokenCode=fresh)["Credentials"]["AccessKeyId"]
    sts.close()


def test_wrong_codes_are_refused_and_the_device_stays_unassigned(iam):
    serial = iam.create_virtual_mfa_device(VirtualMFADeviceName="ops")["VirtualMFADevice"]["SerialNumber"]
    for first, second in (("000000", "111111"),):
        with pytest.raises(ClientError) as refused:
            iam.enable_mfa_device(UserName="ops", SerialNumber=serial, AuthenticationCode1=first,
                                  AuthenticationCode2=second)
        assert code(refused.value) == ("InvalidAuthenticationCode", 403)
    # Undo: an unassigned device can be deleted, after which it does not exist.
    iam.delete_virtual_mfa_device(SerialNumber=serial)
    with pytest.raises(ClientError) as gone:
        iam.enable_mfa_device(UserName="ops", SerialNumber=serial, AuthenticationCode1="123456",
                              AuthenticationCode2="654321")
    assert code(gone.value) == ("NoSuchEntity", 404)


def test_codes_must_be_consecutive(iam):
    created = iam.create_virtual_mfa_device(VirtualMFADeviceName="ops")["VirtualMFADevice"]
    seed = created["Base32StringSeed"].decode()
    first, second, _ = consecutive(seed)
    with pytest.raises(ClientError) as same:
        iam.enable_mfa_device(UserName="ops", SerialNumber=created["SerialNumber"], AuthenticationCode1=first,
                              AuthenticationCode2=first)
    assert code(same.value) == ("InvalidAuthenticationCode", 403)
    with pytest.raises(ClientError) as swapped:
        iam.enable_mfa_device(UserName="ops", SerialNumber=created["SerialNumber"], AuthenticationCode1=second,
                              AuthenticationCode2=first)
    assert code(swapped.value) == ("InvalidAuthenticationCode", 403)


def test_aws_error_codes_for_mistakes(iam):
    iam.create_virtual_mfa_device(VirtualMFADeviceName="dup")
    with pytest.raises(ClientError) as duplicate:
        iam.create_virtual_mfa_device(VirtualMFADeviceName="dup")
    assert code(duplicate.value) == ("EntityAlreadyExists", 409)
    with pytest.raises(ClientError) as bad_name:
        iam.create_virtual_mfa_device(VirtualMFADeviceName="has space")
    assert code(bad_name.value) == ("ValidationError", 400)
    serial = f"arn:aws:iam::{ACCOUNT}:mfa/dup"
    with pytest.raises(ClientError) as no_user:
        iam.enable_mfa_device(UserName="nobody", SerialNumber=serial, AuthenticationCode1="123456",
                              AuthenticationCode2="654321")
    assert code(no_user.value) == ("NoSuchEntity", 404)
    with pytest.raises(ClientError) as no_device:
        iam.enable_mfa_device(UserName="ops", SerialNumber=f"arn:aws:iam::{ACCOUNT}:mfa/none",
                              AuthenticationCode1="123456", AuthenticationCode2="654321")
    assert code(no_device.value) == ("NoSuchEntity", 404)
    with pytest.raises(ClientError) as short_code:
        iam.enable_mfa_device(UserName="ops", SerialNumber=serial, AuthenticationCode1="12a456",
                              AuthenticationCode2="654321")
    assert code(short_code.value) == ("ValidationError", 400)


def test_an_enabled_device_cannot_be_enabled_again(iam, admin):
    created = iam.create_virtual_mfa_device(VirtualMFADeviceName="ops")["VirtualMFADevice"]
    first, second, _ = consecutive(created["Base32StringSeed"].decode())
    iam.enable_mfa_device(UserName="ops", SerialNumber=created["SerialNumber"], AuthenticationCode1=first,
                          AuthenticationCode2=second)
    with pytest.raises(ClientError) as again:
        iam.enable_mfa_device(UserName="ops", SerialNumber=created["SerialNumber"], AuthenticationCode1=first,
                              AuthenticationCode2=second)
    assert code(again.value) == ("EntityAlreadyExists", 409)
    with pytest.raises(ClientError) as in_use:
        iam.delete_virtual_mfa_device(SerialNumber=created["SerialNumber"])
    assert code(in_use.value) == ("DeleteConflict", 409)


def test_unsigned_or_unknown_callers_are_refused(emulator):
    client = boto3.client("iam", endpoint_url=emulator.url, region_name="us-east-1",
                          aws_access_key_id="AKIANOBODY0000000000", aws_secret_access_key="x" * 40,
                          config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ClientError) as refused:
        client.create_virtual_mfa_device(VirtualMFADeviceName="x")
    assert code(refused.value)[0] == "InvalidClientTokenId"
    client.close()
