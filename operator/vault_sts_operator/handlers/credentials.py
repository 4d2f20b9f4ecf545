"""AssumedRoleCredential: one async daemon per object sleeps until its own renewal time."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from vault_sts_operator import metrics
from vault_sts_operator.api import constants as c
from vault_sts_operator.app import Services
from vault_sts_operator.domain.renewal import backoff_delay
from vault_sts_operator.handlers.identities import resolver_from_index
from vault_sts_operator.services.reconciler import TRANSIENT_BACKOFF

log = logging.getLogger(__name__)


def fingerprint(body: Mapping[str, Any]) -> tuple[object, ...]:
    """What a daemon must react to: a spec change (generation) or a new rotate request."""
    meta = body.get("metadata") or {}
    return meta.get("generation"), (meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION)


# Sleeping daemons do not watch the `stopped` flag (that would cost two more tasks per credential):
# kopf cancels them once `cancellation_backoff` has passed, which also lets a pass in flight finish.
# (type: ignore: kopf's callback protocols spell out every keyword; handlers take the ones they use.)
@kopf.daemon(c.GROUP, c.VERSION, c.CREDENTIAL_PLURAL, id="issuer",  # type: ignore[arg-type]
             cancellation_backoff=5.0, cancellation_timeout=10.0)
async def credential_daemon(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
                            stopped: kopf.DaemonStopped, identity_index: kopf.Index[str, Any], **_: Any) -> None:
    services: Services = memo["services"]
    key = (namespace, name)
    services.wakeups.register(key)
    failures = 0
    try:
        while not stopped:
            services.wakeups.note(key, identity=str((body.get("spec") or {}).get("identityRef", {}).get("name", "")),
                                  fingerprint=fingerprint(body))
            resolve = resolver_from_index(identity_index, services.config)
            try:
                async with services.passes:
                    result = await services.reconciler.reconcile(body, resolve, failures)
                failures, delay = result.failures, result.sleep_seconds
            except Exception:  # a bug must not kill the daemon or loop hot
                failures += 1
                delay = backoff_delay(failures, base=TRANSIENT_BACKOFF[0], cap=TRANSIENT_BACKOFF[1],
                                      jitter_key=f"{namespace}/{name}")
                log.exception("unexpected error reconciling %s/%s; retrying in %.0fs", namespace, name, delay)
            if not stopped:
                await services.wakeups.sleep(key, delay)
    finally:
        services.wakeups.unregister(key)
        if body.get("metadata", {}).get("deletionTimestamp"):
            metrics.forget_credential(namespace, name)


@kopf.on.event(c.GROUP, c.VERSION, c.CREDENTIAL_PLURAL)  # type: ignore[arg-type]
async def credential_changed(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Async on purpose: kopf runs sync handlers in threads, and asyncio events are not thread-safe."""
    services: Services | None = memo.get("services")
    if services is not None:
        services.wakeups.changed((namespace, name), fingerprint(body))
