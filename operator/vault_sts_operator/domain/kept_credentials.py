"""Credentials issued in a pass whose Secret could not be written, kept for the next pass of that credential.

STS has already been paid for them (an AssumeRole; a TOTP code with `mfa: direct`): the retry writes them instead
of issuing again. Kept in memory only (the values never reach a log: TemporaryCredentials hides them from repr),
for one CR (namespace, name and uid), and only while they would not be due for renewal anyway and were issued for
what the pass would ask STS now (`key`: a hash of the request, made by the caller). Bounded: expired entries go at
each `keep`, and at most `max_entries` are held (the one nearest its end is dropped first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vault_sts_operator.domain.credentials import TemporaryCredentials

Owner = tuple[str, str, str]  # namespace, name, uid of the AssumedRoleCredential

DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class KeptCredentials:
    key: str  # what they were issued for: reused only for the same request
    creds: TemporaryCredentials
    issued_at: datetime
    usable_until: datetime  # their renewal time: at or past it a new issue is due anyway


class KeptCredentialStore:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max = max_entries
        self._kept: dict[Owner, KeptCredentials] = {}

    def keep(self, owner: Owner, kept: KeptCredentials, *, now: datetime) -> None:
        """Hold `kept` for `owner`'s next pass (replacing what it held)."""
        self._kept.pop(owner, None)
        for stale in [o for o, k in self._kept.items() if now >= k.usable_until]:
            del self._kept[stale]
        if now >= kept.usable_until or self._max <= 0:
            return
        while len(self._kept) >= self._max:
            del self._kept[min(self._kept, key=lambda o: self._kept[o].usable_until)]
        self._kept[owner] = kept

    def take(self, owner: Owner, key: str, *, now: datetime) -> KeptCredentials | None:
        """What `owner` holds for `key`, removed from the store (keep it again if this pass fails too); None when
        nothing is held, or it was issued for another request, or it is due for renewal (then it is dropped)."""
        kept = self._kept.pop(owner, None)
        if kept is None or kept.key != key or now >= kept.usable_until:
            return None
        return kept

    def held(self, owner: Owner) -> KeptCredentials | None:
        """What `owner` holds, left in the store (a pass reads it while gathering, and `take`s it if it issues)."""
        return self._kept.get(owner)

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, owner: object) -> bool:
        return owner in self._kept
