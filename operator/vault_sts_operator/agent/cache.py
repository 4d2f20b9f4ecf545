"""What the agent remembers between requests. Pure: the clock is passed in, nothing here does I/O.

Two maps, as docs/design/pod-identity.md section 7 has them:
- token entries, `sha256(token) -> (credential, validated until)`: the operator said this pod token gets this
  credential; believed until the token's `exp` or `revalidate` seconds after the operator said so, whichever is
  first (so an unbound ServiceAccount or a deleted pod loses access within that time). Bounded, least recently
  used first out.
- credential entries, `namespace/name -> the SDK answer and its expiry`, shared by every pod of that credential on
  the node, so one refresh serves them all.
Refusals (401, 403) are kept 5 s per token digest, to absorb the SDKs' retries of a request that cannot succeed.
A raw token is never a key or a value here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

NEGATIVE_SECONDS = 5.0
MIN_LEFT_SECONDS = 15.0  # never hand out a copy with less left than this (the EKS agent's minimum TTL)
REFRESH_RETRY_SECONDS = 10.0  # after a refresh that left the copy below the margin, wait before the next one


@dataclass(frozen=True, repr=False, slots=True)
class Credentials:
    """One credential's SDK answer. `repr` shows neither key: a stray log line cannot leak them."""

    answer: Mapping[str, str]  # AccessKeyId, SecretAccessKey, Token, Expiration[, AccountId]
    expires_at: float

    def __repr__(self) -> str:
        return f"Credentials(expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 or 403
    code: str
    message: str


@dataclass(slots=True)
class _TokenEntry:
    credential: str
    valid_until: float  # min(token exp, validated_at + revalidate)
    token_expires_at: float


@dataclass(slots=True)
class _CredentialEntry:
    credentials: Credentials
    refresh_not_before: float = 0.0
    refreshing: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """Answer at once; when `refresh` is set, the copy is below the margin and this request should start the
    credential's one refresh (Cache.begin_refresh decides which request does)."""

    credential: str
    credentials: Credentials
    refresh: bool


@dataclass(frozen=True, slots=True)
class Miss:
    """Ask the operator. `fallback`: the token was validated before and its credential's copy is still usable;
    it is answered only if the operator cannot be reached (an operator failover must not fail pods the node
    already serves: docs/design/pod-identity.md 6.4)."""

    fallback: Credentials | None = None


@dataclass(slots=True)
class Cache:
    revalidate_seconds: float = 300.0
    refresh_margin_seconds: float = 1080.0
    max_tokens: int = 10_000
    negative_seconds: float = NEGATIVE_SECONDS
    _tokens: OrderedDict[str, _TokenEntry] = field(default_factory=OrderedDict)
    _credentials: dict[str, _CredentialEntry] = field(default_factory=dict)
    _refusals: OrderedDict[str, tuple[Refusal, float]] = field(default_factory=OrderedDict)

    def lookup(self, digest: str, now: float) -> Hit | Miss | Refusal:
        refused = self._refusals.get(digest)
        if refused is not None:
            if refused[1] > now:
                return refused[0]
            del self._refusals[digest]
        token = self._tokens.get(digest)
        if token is None:
            return Miss()
        self._tokens.move_to_end(digest)
        entry = self._credentials.get(token.credential)
        usable = entry is not None and entry.credentials.expires_at - now >= MIN_LEFT_SECONDS
        if token.token_expires_at <= now or not usable:
            if token.token_expires_at <= now:
                del self._tokens[digest]
            return Miss()
        assert entry is not None  # usable implies it; for the type checker
        if token.valid_until <= now:
            return Miss(fallback=entry.credentials)
        left = entry.credentials.expires_at - now
        refresh = left <= self.refresh_margin_seconds and now >= entry.refresh_not_before and not entry.refreshing
        return Hit(credential=token.credential, credentials=entry.credentials, refresh=refresh)

    def begin_refresh(self, credential: str) -> bool:
        """Claim the credential's one refresh (single flight): True for the first caller until end_refresh."""
        entry = self._credentials.get(credential)
        if entry is None or entry.refreshing:
            return False
        entry.refreshing = True
        return True

    def end_refresh(self, credential: str, now: float) -> None:
        """The refresh is over, whatever its outcome: if the copy is still below the margin (the operator has not
        rotated yet, or could not be reached), the next refresh waits REFRESH_RETRY_SECONDS."""
        entry = self._credentials.get(credential)
        if entry is None:
            return
        entry.refreshing = False
        if entry.credentials.expires_at - now <= self.refresh_margin_seconds:
            entry.refresh_not_before = now + REFRESH_RETRY_SECONDS

    def store(self, digest: str, *, token_expires_at: float, credential: str, credentials: Credentials,
              now: float, revalidate_after: float | None = None) -> None:
        """The operator granted `credential` to this token: remember both."""
        revalidate = self.revalidate_seconds if revalidate_after is None else min(revalidate_after,
                                                                                   self.revalidate_seconds)
        self._refusals.pop(digest, None)
        self._tokens[digest] = _TokenEntry(credential=credential, valid_until=min(token_expires_at, now + revalidate),
                                           token_expires_at=token_expires_at)
        self._tokens.move_to_end(digest)
        while len(self._tokens) > self.max_tokens:
            self._tokens.popitem(last=False)
        entry = self._credentials.get(credential)
        if entry is None:
            self._credentials[credential] = _CredentialEntry(credentials=credentials)
        elif credentials.expires_at >= entry.credentials.expires_at:  # an older answer racing a newer one loses
            entry.credentials = credentials

    def refuse(self, digest: str, refusal: Refusal, now: float) -> None:
        """The operator refused this token: forget what it was granted and repeat the refusal for a few seconds."""
        self._tokens.pop(digest, None)
        self._refusals[digest] = (refusal, now + self.negative_seconds)
        self._refusals.move_to_end(digest)
        while len(self._refusals) > self.max_tokens:
            self._refusals.popitem(last=False)

    def prune(self, now: float) -> None:
        """Drop what can no longer serve: expired tokens and refusals, and credentials no token points to or
        past their expiry (called now and then, so memory follows the pods on the node)."""
        for digest in [d for d, entry in self._tokens.items() if entry.token_expires_at <= now]:
            del self._tokens[digest]
        for digest in [d for d, (_, until) in self._refusals.items() if until <= now]:
            del self._refusals[digest]
        referenced = {entry.credential for entry in self._tokens.values()}
        for name in [n for n, entry in self._credentials.items()
                     if (n not in referenced or entry.credentials.expires_at <= now) and not entry.refreshing]:
            del self._credentials[name]

    def sizes(self) -> dict[str, int]:
        return {"tokens": len(self._tokens), "credentials": len(self._credentials), "refusals": len(self._refusals)}
