"""AssumedRoleCredential: kopf watches; every event only updates the scheduler (services/controller.py)."""

from __future__ import annotations

from typing import Any

import kopf

from vault_sts_operator.api import constants as c
from vault_sts_operator.app import Services
from vault_sts_operator.handlers.identities import resolver_from_index


# An event handler, not a daemon: kopf adds no finalizer and keeps no task per object.
# (type: ignore: kopf's callback protocols spell out every keyword; handlers take the ones they use.)
@kopf.on.event(c.GROUP, c.VERSION, c.CREDENTIAL_PLURAL)  # type: ignore[arg-type]
async def credential_event(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo,
                           identity_index: kopf.Index[str, Any], **_: Any) -> None:
    services: Services | None = memo.get("services")
    if services is None:
        return
    controller = services.controller
    if controller.resolve is None:
        controller.resolve = resolver_from_index(identity_index, services.config)
    controller.observe(body, event.get("type"))
