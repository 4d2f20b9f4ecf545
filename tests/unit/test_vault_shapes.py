"""The two Vaults' answers, as captured from OpenBao 2.x and HashiCorp Vault 1.21 on the local stack
(docs/vault-flavours.md), read the same way by the operator's Vault client."""

from __future__ import annotations

from datetime import UTC, datetime

import hvac.exceptions
import pytest

from vault_sts_operator.clients.vault import _credentials_from_aws_engine, _login_refused, _vault_messages


def error(cls: type[hvac.exceptions.VaultError], *messages: str) -> hvac.exceptions.VaultError:
    return cls(errors=list(messages), method="get", url="https://vault.example/v1/x")


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        (["permission denied"], "permission denied"),  # a bad or revoked token
        (["1 error occurred:\n\t* permission denied\n\n"], "permission denied"),  # a policy denial
        (["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"], "permission denied; invalid token"),
        (['invalid role name "nope"'], 'invalid role name "nope"'),
        ([], "Forbidden"),
    ],
)
def test_error_messages_read_the_same_whatever_the_wrapping(errors: list[str], expected: str) -> None:
    assert _vault_messages(error(hvac.exceptions.Forbidden, *errors)) == expected


@pytest.mark.parametrize(
    ("cls", "refused"),
    [
        (hvac.exceptions.Forbidden, True),  # "service account name not authorized", "permission denied"
        (hvac.exceptions.InvalidRequest, True),  # 'invalid role name "x"', "invalid role or secret ID"
        (hvac.exceptions.InternalServerError, False),
        (hvac.exceptions.VaultDown, False),
    ],
)
def test_refused_logins_are_told_apart_from_outages(cls: type[hvac.exceptions.VaultError], refused: bool) -> None:
    assert _login_refused(error(cls, "x")) is refused


def aws_response(lease_id: str, lease_duration: int, ttl: int | None) -> dict[str, object]:
    data: dict[str, object] = {"access_key": "ASIAEXAMPLE", "secret_key": "s", "session_token": "t"}
    if ttl is not None:
        data["ttl"] = ttl
    return {"lease_id": lease_id, "renewable": False, "lease_duration": lease_duration, "data": data}


@pytest.mark.parametrize(
    ("response", "lifetime"),
    [
        # Vault 1.21 and OpenBao: a non-renewable lease, and the engine's own ttl in the data
        (aws_response("aws/creds/ops-session/abc", 3599, 3599), 3599),
        # Vault 1.12-1.13 (vault#15869): no lease at all for STS credentials; the data says how long they live
        (aws_response("", 0, 900), 900),
        # a lease capped below the credentials' life by the mount's max_lease_ttl: the credentials' ttl wins
        (aws_response("aws/creds/ops-session/abc", 600, 3599), 3599),
        # neither: the requested ttl
        (aws_response("", 0, None), 1800),
    ],
)
def test_sts_credentials_lifetime_comes_from_the_response_not_a_lease(response: dict[str, object],
                                                                      lifetime: int) -> None:
    before = datetime.now(UTC)
    creds = _credentials_from_aws_engine(response, "aws/creds/ops-session", 1800)
    assert abs((creds.expiration - before).total_seconds() - lifetime) < 5
    assert creds.session_token == "t"
