"""One MFA session per identity, shared by every credential that uses it.

The session (GetSessionToken with one TOTP code) is created once however many
credentials ask at the same moment (single flight), renewed before it ends, and
replaced when AWS says it is no longer valid.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vault_sts_operator import metrics
from vault_sts_operator.api.specs import IdentitySpec
from vault_sts_operator.domain.credentials import TemporaryCredentials

log = logging.getLogger(__name__)

# A role session may be asked for up to an hour; keep that much session left, or a quarter of it.
ROLE_SESSION_HEADROOM = timedelta(seconds=3600 + 300)


def refresh_margin(session_duration_seconds: int) -> timedelta:
    return min(ROLE_SESSION_HEADROOM, timedelta(seconds=session_duration_seconds) / 4)


@dataclass(frozen=True)
class _Entry:
    session_key: str
    credentials: TemporaryCredentials


class MfaSessionCache:
    def __init__(
        self,
        create: Callable[[IdentitySpec], Awaitable[TemporaryCredentials]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._create = create
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

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
            creds = await self._create(identity)
            self._entries[identity.name] = _Entry(identity.session_key, creds)
            metrics.mfa_session_created(identity.name, creds.expiration.timestamp())
            log.info("MFA session for identity %s created (access key %s, expires %s)",
                     identity.name, creds.access_key_id, creds.expiration.isoformat())
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
