"""Emulated IAM/STS state: users, access keys, MFA devices, roles and issued credentials.

Pure data and small rules; no locking and no I/O. ``Emulator`` (emulator.py) owns the lock.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from .mfa import MFADevice

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_PARTITION = "aws"
PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
DEFAULT_MAX_SESSION = 3600

_UPPER_ALNUM = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
ROLE_ARN = re.compile(r"arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})")
USER_NAME = re.compile(r"[\w+=,.@-]{1,64}")
ACCOUNT = re.compile(r"\d{12}")


def random_id(prefix: str, length: int = 16) -> str:
    return prefix + "".join(secrets.choice(_UPPER_ALNUM) for _ in range(length))


def random_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


def random_session_token() -> str:
    return "IQoJb3JpZ2luX2Vj" + base64.b64encode(secrets.token_bytes(300)).decode("ascii")


class Kind(StrEnum):
    USER = "user"  # long-term IAM user key (AKIA...)
    SESSION = "session"  # GetSessionToken credentials (ASIA...)
    ASSUMED_ROLE = "assumed-role"  # AssumeRole credentials (ASIA...)


@dataclass
class User:
    name: str
    account: str = DEFAULT_ACCOUNT
    partition: str = DEFAULT_PARTITION
    user_id: str = field(default_factory=lambda: random_id("AIDA", 17))

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:user/{self.name}"


@dataclass
class Role:
    arn: str
    trusted_principals: list[str]
    require_mfa: bool = False
    max_mfa_age_seconds: int | None = None
    external_id: str | None = None
    max_session_duration: int = DEFAULT_MAX_SESSION
    role_id: str = field(default_factory=lambda: random_id("AROA", 17))
    # An IAM trust policy document (policy.py). None: the flags above, trusting the listed
    # principals for sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity.
    trust_policy: dict[str, Any] | None = None
    # A test knob, not AWS: AssumeRole credentials of this role expire this many seconds after issue, whatever
    # was asked (the SDKs' refresh windows are minutes; AWS's shortest session is 15).
    lifetime_cap_seconds: int | None = None

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """(partition, account, path, name)"""
        match = ROLE_ARN.fullmatch(self.arn)
        if match is None:  # guarded at creation
            raise ValueError(f"not a role ARN: {self.arn}")
        partition, account, path, name = match.groups()
        return partition, account, "/" + path, name

    @property
    def name(self) -> str:
        return self.parts[3]

    @property
    def account(self) -> str:
        return self.parts[1]

    @property
    def partition(self) -> str:
        return self.parts[0]

    def session_arn(self, session_name: str) -> str:
        partition, account, _, name = self.parts
        return f"arn:{partition}:sts::{account}:assumed-role/{name}/{session_name}"


@dataclass
class Credential:
    access_key_id: str
    secret_access_key: str
    kind: Kind
    account: str
    partition: str
    user_name: str | None = None  # USER and SESSION
    role_arn: str | None = None  # ASSUMED_ROLE
    role_id: str | None = None
    session_name: str | None = None
    session_token: str | None = None
    issued_at: float | None = None
    expiration: float | None = None  # None: never (long-term keys)
    mfa_authenticated: bool = False
    mfa_auth_time: float | None = None
    source_identity: str | None = None
    session_tags: dict[str, str] = field(default_factory=dict)  # AssumeRole session tags, keys as sent
    transitive_tag_keys: list[str] = field(default_factory=list)

    @property
    def temporary(self) -> bool:
        return self.kind is not Kind.USER

    def expired(self, now: float) -> bool:
        return self.expiration is not None and now >= self.expiration

    def public(self, arn: str) -> dict[str, Any]:
        """Facts safe to show: never the secret nor the session token."""
        return {
            "AccessKeyId": self.access_key_id,
            "kind": self.kind.value,
            "arn": arn,
            "account": self.account,
            "expiration": self.expiration,
            "issued_at": self.issued_at,
            "mfa_authenticated": self.mfa_authenticated,
            "mfa_auth_time": self.mfa_auth_time,
            "carries_mfa_context": self.kind is Kind.SESSION and self.mfa_authenticated,
            "session_name": self.session_name,
            "source_identity": self.source_identity,
            "session_tags": dict(self.session_tags),
            "transitive_tag_keys": list(self.transitive_tag_keys),
        }


@dataclass
class Principal:
    """Who is calling, as trust policies and GetCallerIdentity see it."""

    arn: str  # GetCallerIdentity's Arn
    trust_arn: str  # the ARN matched against trust policies
    user_id: str
    account: str
    partition: str
    user: User | None
    credential: Credential

    @property
    def mfa_context_time(self) -> float | None:
        """When MFA was proven for this principal's credentials, if they carry MFA context."""
        cred = self.credential
        if cred.kind is Kind.SESSION and cred.mfa_authenticated:
            return cred.mfa_auth_time
        return None


@dataclass
class State:
    users: dict[str, User] = field(default_factory=dict)
    credentials: dict[str, Credential] = field(default_factory=dict)
    devices: dict[str, MFADevice] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)

    def principal(self, cred: Credential) -> Principal:
        if cred.kind is Kind.ASSUMED_ROLE:
            role_arn = cred.role_arn or ""
            role = self.roles.get(role_arn)
            role_id = cred.role_id or (role.role_id if role else "AROAUNKNOWN")
            name = role_arn.rsplit("/", 1)[-1]
            session = cred.session_name or ""
            return Principal(
                arn=f"arn:{cred.partition}:sts::{cred.account}:assumed-role/{name}/{session}",
                trust_arn=role_arn,
                user_id=f"{role_id}:{session}",
                account=cred.account,
                partition=cred.partition,
                user=None,
                credential=cred,
            )
        user = self.users[cred.user_name or ""]
        return Principal(
            arn=user.arn,
            trust_arn=user.arn,
            user_id=user.user_id,
            account=user.account,
            partition=user.partition,
            user=user,
            credential=cred,
        )

    def devices_of(self, user_name: str) -> list[MFADevice]:
        return [d for d in self.devices.values() if d.owner == user_name]

    def prune(self, now: float, keep_seconds: float = 86400.0) -> None:
        """Forget temporary credentials that expired long ago (bounded memory in soak tests)."""
        stale = [
            akid
            for akid, cred in self.credentials.items()
            if cred.expiration is not None and cred.expiration + keep_seconds < now
        ]
        for akid in stale:
            del self.credentials[akid]

    # --- persistence -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "users": [asdict(u) for u in self.users.values()],
            "credentials": [{**asdict(c), "kind": c.kind.value} for c in self.credentials.values()],
            "devices": [asdict(d) for d in self.devices.values()],
            "roles": [asdict(r) for r in self.roles.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        state = cls()
        for raw in data.get("users", []):
            user = User(**raw)
            state.users[user.name] = user
        for raw in data.get("credentials", []):
            cred = Credential(**{**raw, "kind": Kind(raw["kind"])})
            state.credentials[cred.access_key_id] = cred
        for raw in data.get("devices", []):
            device = MFADevice(**raw)
            state.devices[device.serial] = device
        for raw in data.get("roles", []):
            role = Role(**raw)
            state.roles[role.arn] = role
        return state


def trusts(role: Role, principal: Principal) -> bool:
    """Does the role's trust policy name this principal (directly, by account root, or ``*``)?"""
    root = f"arn:{principal.partition}:iam::{principal.account}:root"
    for trusted in role.trusted_principals:
        if trusted in ("*", principal.trust_arn, root):
            return True
        if trusted == principal.account:  # "Principal": {"AWS": "123456789012"} means the root
            return True
    return False
