"""Removes the finalizer an older version of the operator put on every AssumedRoleCredential.

The operator adds no finalizer: a credential's Secret goes with it through its owner reference. Versions that ran
a kopf daemon per CR added `vaultsts.io/kopf-finalizer` (api.constants.FINALIZER); while it is there, deleting the
CR hangs. `LegacyFinalizers.observe` removes it, in the background, from any CR the watch shows with it (not from a
deleted one); a removal that fails is tried again at that CR's next event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.object_meta import Key

log = logging.getLogger(__name__)


class LegacyFinalizers:
    def __init__(self, kube: KubeGateway) -> None:
        self._kube = kube
        self._removals: set[asyncio.Task[None]] = set()  # in flight

    def observe(self, key: Key, body: Mapping[str, Any], event_type: str | None) -> None:
        finalizers = list((body.get("metadata") or {}).get("finalizers") or ())
        if c.FINALIZER in finalizers and event_type != "DELETED":
            task = asyncio.get_running_loop().create_task(self._remove(key, finalizers),
                                                          name=f"finalizer {key[0]}/{key[1]}")
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def _remove(self, key: Key, finalizers: list[str]) -> None:
        try:
            await self._kube.remove_finalizer(key[0], key[1], finalizers, c.FINALIZER)
        except IssuingError as exc:  # the next event of the object tries again
            log.warning("%s", exc.message)
