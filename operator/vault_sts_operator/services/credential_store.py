"""Mode PodIdentity's state in the operator: which credential serves which ServiceAccount, and the credentials
themselves, in this process's memory only (docs/design/pod-identity.md 6.1).

- Bindings come from the credential watch (`observe`/`forget`, called by the controller for every object it
  sees, on every replica), so a replica that takes over knows every binding at once, before any pass runs. When
  two credentials of a namespace name one ServiceAccount, the older serves (domain/delivery.py `serving`); the
  other's passes are refused with ServiceAccountConflict.
- Credentials are put here by the leader's passes instead of into a Secret, and dropped when a pass refuses the
  credential or the credential goes. Nothing here is written anywhere: a restarted or new leader holds nothing
  and issues at each credential's renewal time, or at once when an agent asks for one it does not hold (`want`:
  the request waits on the pass the scheduler runs for it; the scheduler's one-pass-per-key rule makes that the
  single flight).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.domain.delivery import POD_IDENTITY, Claim, conflicts, serving
from vault_sts_operator.domain.object_meta import Key

MAX_ACCOUNTS_READ = 32  # a body's serviceAccounts beyond the CRD's bound are ignored (the pass refuses it)


@dataclass(frozen=True)
class Stored:
    creds: TemporaryCredentials
    record: IssuedRecord
    uid: str  # the credential object's UID: a credential deleted and created again starts with nothing


@dataclass(frozen=True)
class Outcome:
    """How the latest pass over a wanted credential ended: served (`stored`), or refused with a reason."""

    stored: Stored | None
    reason: str = ""
    message: str = ""


class PodIdentityStore:
    def __init__(self, *, wake: Callable[[Key], None] | None = None) -> None:
        self._claims: dict[str, dict[str, Claim]] = {}  # namespace -> credential name -> its claim
        self._served: dict[str, dict[str, str]] = {}  # namespace -> ServiceAccount -> serving credential
        self._creds: dict[Key, Stored] = {}
        self._refused: dict[Key, tuple[str, str]] = {}  # key -> (reason, message) of the latest refused pass
        self._wanted: dict[Key, asyncio.Future[Outcome]] = {}
        self._wake = wake

    def set_waker(self, wake: Callable[[Key], None]) -> None:
        self._wake = wake

    # -- bindings, from the watch ------------------------------------------------------------------
    def observe(self, key: Key, body: Mapping[str, Any]) -> None:
        delivery = (body.get("spec") or {}).get("delivery") or {}
        accounts = delivery.get("serviceAccounts") if isinstance(delivery, Mapping) else None
        if not isinstance(delivery, Mapping) or delivery.get("mode") != POD_IDENTITY or not isinstance(accounts, list):
            self.forget(key)
            return
        meta = body.get("metadata") or {}
        claim = Claim(name=key[1], created=str(meta.get("creationTimestamp") or ""),
                      service_accounts=tuple(str(a) for a in accounts[:MAX_ACCOUNTS_READ]))
        namespace = self._claims.setdefault(key[0], {})
        if namespace.get(key[1]) != claim:
            namespace[key[1]] = claim
            self._served[key[0]] = serving(namespace.values())

    def forget(self, key: Key) -> None:
        """The credential is gone, or no longer in mode PodIdentity: nothing of it is served any more."""
        namespace = self._claims.get(key[0])
        if namespace is not None and namespace.pop(key[1], None) is not None:
            if namespace:
                self._served[key[0]] = serving(namespace.values())
            else:
                del self._claims[key[0]]
                self._served.pop(key[0], None)
        self._creds.pop(key, None)
        self._refused.pop(key, None)
        self._settle(key, Outcome(None, "NotBound", "the credential no longer serves this ServiceAccount"))

    def serving(self, namespace: str, service_account: str) -> str | None:
        """The credential that serves a ServiceAccount, or None."""
        return (self._served.get(namespace) or {}).get(service_account)

    def conflicts(self, key: Key) -> dict[str, str]:
        """The credential's ServiceAccounts that an older credential of its namespace serves: account -> holder."""
        claim = (self._claims.get(key[0]) or {}).get(key[1])
        if claim is None:
            return {}
        return conflicts(claim, self._served.get(key[0]) or {})

    # -- credentials, from the leader's passes -----------------------------------------------------
    def get(self, key: Key, uid: str | None = None) -> Stored | None:
        stored = self._creds.get(key)
        if stored is None or (uid is not None and stored.uid != uid):
            return None
        return stored

    def put(self, key: Key, stored: Stored) -> None:
        self._creds[key] = stored
        self._refused.pop(key, None)
        self._settle(key, Outcome(stored))

    def refused(self, key: Key, reason: str, message: str, *, keep: bool) -> None:
        """A pass over the credential failed: its waiters get the reason. `keep`: the credentials held stay
        servable (a transient failure while they are valid); otherwise they are dropped."""
        if not keep:
            self._creds.pop(key, None)
            self._refused[key] = (reason, message)
        self._settle(key, Outcome(self._creds.get(key), reason, message))

    def refusal(self, key: Key) -> tuple[str, str] | None:
        return self._refused.get(key)

    def is_wanted(self, key: Key) -> bool:
        return key in self._wanted

    def want(self, key: Key) -> asyncio.Future[Outcome]:
        """An agent asked for a credential this process does not hold: wake its pass, and wait on it."""
        future = self._wanted.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._wanted[key] = future
            if self._wake is not None:
                self._wake(key)
        return future

    def drop_all(self) -> None:
        """This replica stopped leading: what it held is the next leader's to issue (and this one may not serve)."""
        self._creds.clear()
        self._refused.clear()
        for key in list(self._wanted):
            self._settle(key, Outcome(None, "NotLeader", "this replica stopped leading"))

    def _settle(self, key: Key, outcome: Outcome) -> None:
        future = self._wanted.pop(key, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    def __len__(self) -> int:
        return len(self._creds)
