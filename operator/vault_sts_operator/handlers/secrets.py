"""The operator's own Secrets: one deleted by hand wakes its credential, which writes it again.

Registered only when the operator may watch Secrets (`--no-watch-secrets` turns it off; the periodic
existence check of `--secret-check-interval` then stands in). The watch is label-selected on the
server (kopf's `settings.watching.label_selectors`, set at startup), so only Secrets this operator
wrote reach it; kopf cannot ask for metadata only.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from vault_sts_operator.api import constants as c
from vault_sts_operator.app import Services

log = logging.getLogger(__name__)

SECRET_SELECTOR = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY_VALUE}"


async def secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") != "DELETED":
        return
    services: Services | None = memo.get("services")
    meta = (event.get("object") or {}).get("metadata") or {}
    owner = (meta.get("labels") or {}).get(c.CREDENTIAL_LABEL)
    if services is None or not owner:
        return
    namespace = str(meta.get("namespace"))
    log.info("Secret %s/%s of %s/%s was deleted; waking its credential", namespace, meta.get("name"),
             namespace, owner)
    services.controller.secret_deleted(namespace, str(owner))


def register() -> None:
    """Add the Secret watch to kopf's default registry (before `kopf.run`)."""
    kopf.on.event("v1", "secrets", labels={c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE})(secret_event)
