"""MFAIdentity: verified against Vault, its credentials woken on change.

The credential passes resolve identities from the operator's own identity watch (services/watch.py,
services/identity_catalog.py), not from a kopf index: credentials are not kopf's.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from vault_sts_operator.api import constants as c
from vault_sts_operator.api import reasons
from vault_sts_operator.app import Services
from vault_sts_operator.domain.errors import IssuingError

log = logging.getLogger(__name__)

VERIFY_INTERVAL_SECONDS = 300.0


async def _verify_and_report(body: kopf.Body, name: str, uid: str, spec: kopf.Spec, memo: kopf.Memo) -> bool:
    services: Services = memo["services"]
    try:
        result = await services.verifier.verify(name, uid, spec, body)
    except IssuingError as exc:  # the status could not be written: kopf retries the handler
        raise kopf.TemporaryError(exc.message, delay=30) from None
    if not result.ready:
        kopf.warn(body, reason=result.reason, message=result.message)
    if result.changed:  # a spec change or a flip of readiness: its credentials re-decide now
        services.controller.identity_changed(name)
    return result.ready


@kopf.on.resume(c.GROUP, c.VERSION, c.IDENTITY_PLURAL)
@kopf.on.create(c.GROUP, c.VERSION, c.IDENTITY_PLURAL)
@kopf.on.update(c.GROUP, c.VERSION, c.IDENTITY_PLURAL, field="spec")
async def identity_changed(body: kopf.Body, name: str, uid: str, spec: kopf.Spec, memo: kopf.Memo,
                           **_: Any) -> None:
    await _verify_and_report(body, name, uid, spec, memo)


@kopf.timer(c.GROUP, c.VERSION, c.IDENTITY_PLURAL, interval=VERIFY_INTERVAL_SECONDS, initial_delay=60)
async def identity_recheck(body: kopf.Body, name: str, uid: str, spec: kopf.Spec, memo: kopf.Memo,
                           **_: Any) -> None:
    """Re-verify identities that are not Ready (Vault was down, a policy was fixed...)."""
    ready = [cond for cond in (body.get("status") or {}).get("conditions") or () if cond.get("type") == reasons.READY]
    if not ready or ready[0].get("status") != "True":
        await _verify_and_report(body, name, uid, spec, memo)


@kopf.on.delete(c.GROUP, c.VERSION, c.IDENTITY_PLURAL, optional=True)
async def identity_deleted(name: str, memo: kopf.Memo, **_: Any) -> None:
    services: Services | None = memo.get("services")
    if services is not None:
        services.issuer.sessions.forget(name)
        services.controller.identity_changed(name)
