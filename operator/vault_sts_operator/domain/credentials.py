"""Credentials as values. Secret halves are kept out of repr() so they cannot reach a log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AccessKey:
    """A long-term IAM user key read from Vault."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class TemporaryCredentials:
    """Credentials returned by STS (GetSessionToken or AssumeRole)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    assumed_role_arn: str = ""


@dataclass(frozen=True)
class TotpCode:
    """A one-time code from Vault and the time step it belongs to."""

    code: str = field(repr=False)
    step: int
    period: int
