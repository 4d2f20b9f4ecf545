"""Fixtures: the STS emulator as a subprocess, its admin client, boto3 STS clients and a seeded identity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from sts_emulator_support import (
    ACCOUNT,
    ROLE_EXTERNAL,
    ROLE_LONG,
    ROLE_MFA,
    ROLE_PLAIN,
    ROOT,
    Device,
    Emulator,
    Identity,
    StsFactory,
    start_emulator,
    stop_emulator,
)

from devstack.sts_emulator.admin import EmulatorAdmin


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    started = start_emulator(tmp_path_factory.mktemp("sts-emulator") / "emulator.log")
    yield started
    stop_emulator(started)


@pytest.fixture
def admin(emulator: Emulator) -> EmulatorAdmin:
    client = EmulatorAdmin(emulator.url)
    client.reset()
    return client


@pytest.fixture
def sts_client(emulator: Emulator) -> Iterator[StsFactory]:
    """``sts_client(access_key_id, secret, token=None)``: a boto3 STS client with retries off."""
    clients: list[Any] = []

    def make(access_key_id: str, secret_access_key: str, session_token: str | None = None, **config: Any) -> Any:
        client = boto3.client(
            "sts",
            endpoint_url=emulator.url,
            region_name="us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def identity(admin: EmulatorAdmin, sts_client: StsFactory) -> Identity:
    user = admin.create_user("ops")
    key = admin.create_access_key("ops")
    device = admin.create_mfa_device("ops", serial=f"arn:aws:iam::{ACCOUNT}:mfa/ops")
    admin.create_user("other")
    other = admin.create_mfa_device("other", serial=f"arn:aws:iam::{ACCOUNT}:mfa/other")
    admin.create_role(ROLE_MFA, [ROOT], require_mfa=True, max_session_duration=43200)
    admin.create_role(ROLE_PLAIN, [user["arn"], ROLE_MFA])
    admin.create_role(ROLE_LONG, [ROOT], max_session_duration=43200)
    admin.create_role(ROLE_EXTERNAL, [ROOT], external_id="partner-123")
    return Identity(
        user_arn=user["arn"],
        key_id=key["AccessKeyId"],
        secret=key["SecretAccessKey"],
        device=Device(device["serial"], device["seed"], device["period"]),
        other_device=Device(other["serial"], other["seed"], other["period"]),
        client=sts_client(key["AccessKeyId"], key["SecretAccessKey"]),
    )
