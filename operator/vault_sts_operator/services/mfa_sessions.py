"""One MFA session per identity, shared by every credential that uses it.

The session (GetSessionToken with one TOTP code) is created once however many
credentials ask at the same moment (single flight), renewed before it ends, and
replaced when AWS says it is no longer valid. Each way of creating a session (the
access key in Vault's KV, or Vault's AWS engine with a `session_token` role) is one
provider; the cache picks the provider of the identity's access-key source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from vault_sts_operator import metrics
from vault_sts_operator.api.specs import IdentitySpec, KvAccessKey, VaultAwsAccessKey
from vault_sts_operator.clients.sts import StsGateway
from vault_sts_operator.clients.vault_factory import VaultSessionFactory
from vault_sts_operator.domain.credentials import TemporaryCredentials, TotpCode
from vault_sts_operator.domain.errors import InvalidSpecError
from vault_sts_operator.services.limiter import BlockingCalls
from vault_sts_operator.services.mfa_device import MfaDeviceGuard

log = logging.getLogger(__name__)

# A role session may be asked for up to an hour; keep that much session left, or a quarter of it.
ROLE_SESSION_HEADROOM = timedelta(seconds=3600 + 300)

SessionListener = Callable[[IdentitySpec, TemporaryCredentials], Awaitable[None]]


def refresh_margin(session_duration_seconds: int) -> timedelta:
    return min(ROLE_SESSION_HEADROOM, timedelta(seconds=session_duration_seconds) / 4)


class MfaSessionProvider(Protocol):
    async def create(self, identity: IdentitySpec) -> TemporaryCredentials:
        """A new MFA session: one TOTP code spent through the device guard."""


async def fetch_code(vault: VaultSessionFactory, identity: IdentitySpec) -> TotpCode:
    session = await vault.get(identity.vault)
    return await asyncio.to_thread(session.totp_code, identity.totp.mount, identity.totp.key, identity.totp.period)


class KvSessionProvider:
    """accessKey.kv: the operator calls STS GetSessionToken with the long-term key and the code."""

    def __init__(self, *, vault: VaultSessionFactory, sts: StsGateway, devices: MfaDeviceGuard,
                 calls: BlockingCalls) -> None:
        self._vault, self._sts, self._devices, self._calls = vault, sts, devices, calls

    async def create(self, identity: IdentitySpec) -> TemporaryCredentials:
        source = identity.access_key
        assert isinstance(source, KvAccessKey)
        session = await self._vault.get(identity.vault)
        key = await asyncio.to_thread(session.read_access_key, source.mount, source.path,
                                      source.access_key_id_key, source.secret_access_key_key)

        async def use(code: str) -> TemporaryCredentials:
            return await self._calls.run(identity.name, lambda: self._sts.get_session_token(
                region=identity.sts_region, endpoint=identity.sts_endpoint, key=key,
                serial=identity.mfa_serial, code=code, duration_seconds=identity.session_duration))

        return await self._devices.spend(identity.device_key, lambda: fetch_code(self._vault, identity), use,
                                         identity=identity.name)


class VaultAwsSessionProvider:
    """accessKey.vaultAWS with a `session_token` role: Vault calls GetSessionToken with the code."""

    def __init__(self, *, vault: VaultSessionFactory, devices: MfaDeviceGuard) -> None:
        self._vault, self._devices = vault, devices

    async def create(self, identity: IdentitySpec) -> TemporaryCredentials:
        source = identity.access_key
        assert isinstance(source, VaultAwsAccessKey)
        session = await self._vault.get(identity.vault)

        async def use(code: str) -> TemporaryCredentials:
            return await asyncio.to_thread(session.aws_session_token, source.mount, source.role, code,
                                           identity.session_duration)

        return await self._devices.spend(identity.device_key, lambda: fetch_code(self._vault, identity), use,
                                         identity=identity.name)


@dataclass(frozen=True)
class _Entry:
    session_key: str
    credentials: TemporaryCredentials


class MfaSessionCache:
    def __init__(
        self,
        *,
        kv: MfaSessionProvider,
        vault_aws: MfaSessionProvider,
        on_session: SessionListener | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kv = kv
        self._vault_aws = vault_aws
        self._on_session = on_session
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _provider(self, identity: IdentitySpec) -> MfaSessionProvider:
        source = identity.access_key
        if isinstance(source, KvAccessKey):
            return self._kv
        if source.credential_type == "sessionToken":
            return self._vault_aws
        raise InvalidSpecError(f"MFAIdentity {identity.name}: credentialType assumedRole has no MFA session")

    def _usable(self, identity: IdentitySpec) -> TemporaryCredentials | None:
        entry = self._entries.get(identity.name)
        if entry is None or entry.session_key != identity.session_key:
            return None
        if entry.credentials.expiration - self._clock() <= refresh_margin(identity.session_duration):
            return None
        return entry.credentials

    async def get(self, identity: IdentitySpec) -> TemporaryCredentials:
        usable = self._usable(identity)
        if usable is not None:
            return usable
        lock = self._locks.setdefault(identity.name, asyncio.Lock())
        async with lock:
            usable = self._usable(identity)  # another caller may have created it meanwhile
            if usable is not None:
                return usable
            creds = await self._provider(identity).create(identity)
            metrics.MFA_SESSIONS.labels(identity=identity.name).inc()
            self._entries[identity.name] = _Entry(identity.session_key, creds)
            metrics.mfa_session_created(identity.name, creds.expiration.timestamp())
            log.info("MFA session for identity %s created (access key %s, expires %s)",
                     identity.name, creds.access_key_id, creds.expiration.isoformat())
            if self._on_session is not None:
                await self._on_session(identity, creds)
            return creds

    def invalidate(self, identity_name: str, access_key_id: str) -> None:
        """Forget the session if it is still the one that failed."""
        entry = self._entries.get(identity_name)
        if entry is not None and entry.credentials.access_key_id == access_key_id:
            del self._entries[identity_name]
            metrics.mfa_session_forgotten(identity_name)

    def forget(self, identity_name: str) -> None:
        self._entries.pop(identity_name, None)
        metrics.mfa_session_forgotten(identity_name)
