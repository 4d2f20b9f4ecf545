"""MFAIdentity verification on the operator's own scheduler: on first sight, on each spec change, and every
`RECHECK_SECONDS` while an identity is not Ready (Vault was down, a policy was fixed...).

The identity watch (services/watch.py) hands every identity to `observe`; a pass verifies it
(services/verifier.py: a Vault login, the key and a TOTP code read, nothing spent), writes its status, posts a
Warning Event when it is not Ready, and wakes its credentials when its readiness or generation changed. The
scheduler runs only on the leader, like the credentials' (services/leader.py pauses both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.object_meta import Key
from vault_sts_operator.services.reconciler import EventSink
from vault_sts_operator.services.scheduler import Scheduler
from vault_sts_operator.services.verifier import IdentityVerifier

log = logging.getLogger(__name__)

RECHECK_SECONDS = 300.0  # an identity that is not Ready is verified again this often
STATUS_RETRY_SECONDS = 30.0  # its status could not be written: try again this soon


def _compact(body: Mapping[str, Any]) -> bytes:
    meta = body.get("metadata") or {}
    return json.dumps({"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                       "metadata": {"name": meta.get("name"), "uid": meta.get("uid"),
                                    "generation": meta.get("generation")},
                       "spec": body.get("spec") or {}, "status": body.get("status") or {}},
                      separators=(",", ":")).encode()


class IdentityVerification:
    def __init__(self, verifier: IdentityVerifier, *, events: EventSink, on_changed: Callable[[str], None],
                 on_deleted: Callable[[str], None], workers: int = 2) -> None:
        self._verifier = verifier
        self._events = events
        self._on_changed = on_changed  # the identity's readiness or generation changed: its credentials re-decide
        self._on_deleted = on_deleted  # forget what was cached for it (its MFA session)
        self._bodies: dict[str, bytes] = {}
        self._seen: dict[str, tuple[object, object]] = {}  # name -> (uid, generation) last verified or queued
        self.scheduler: Scheduler[str] = Scheduler(self._pass, workers=workers)

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        if event_type == "DELETED":
            self.forget(name)
            return
        self._bodies[name] = _compact(body)
        marker = (meta.get("uid"), meta.get("generation"))
        if self._seen.get(name) != marker:  # new, or its spec changed (status-only updates do not count)
            self._seen[name] = marker
            self.scheduler.wake(name)

    def listed(self, seen: set[Key]) -> None:
        for name in [n for n in self._bodies if ("", n) not in seen]:  # deleted while no watch was open
            self.forget(name)

    def forget(self, name: str) -> None:
        if self._bodies.pop(name, None) is not None:
            self._on_deleted(name)
        self._seen.pop(name, None)
        self.scheduler.forget(name)

    async def _pass(self, name: str) -> float | None:
        raw = self._bodies.get(name)
        if raw is None:
            return None
        body = json.loads(raw)
        meta = body["metadata"]
        try:
            result = await self._verifier.verify(name, str(meta.get("uid")), body["spec"], body)
        except IssuingError as exc:  # the status could not be written
            log.warning("MFAIdentity %s: %s; verifying again in %.0fs", name, exc.message, STATUS_RETRY_SECONDS)
            return STATUS_RETRY_SECONDS
        if not result.ready:
            await self._events(body, type_="Warning", reason=result.reason, message=result.message)
        if result.changed:
            self._on_changed(name)
        return None if result.ready else RECHECK_SECONDS
