"""MFAIdentity verification: Vault accepts the operator and names what the identity points at."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vault_sts_operator.api.conditions import find_condition, remove_condition, set_condition
from vault_sts_operator.api.specs import ConnectionRules, KvAccessKey, VaultConnection, parse_identity
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.vault_factory import VaultSessionFactory
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.allowlist import selector_warnings
from vault_sts_operator.domain.errors import IssuingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    ready: bool
    reason: str
    message: str  # for the Event: no Vault address or path (Events land where others may read them)
    changed: bool  # readiness or generation differ from what the status said before


class IdentityVerifier:
    def __init__(self, *, vault: VaultSessionFactory, kube: KubeGateway, default_vault: VaultConnection | None,
                 operator_namespace: str, rules: ConnectionRules | None = None) -> None:
        self._rules = rules
        self._vault = vault
        self._kube = kube
        self._default_vault = default_vault
        self._operator_namespace = operator_namespace

    async def _check(self, name: str, uid: str, spec: Mapping[str, Any]) -> None:
        """Reads a TOTP code (which spends nothing: only sending it to AWS does) and the access
        key's KV path; never calls STS."""
        identity = parse_identity(name, uid, spec, default_vault=self._default_vault,
                                  operator_namespace=self._operator_namespace, rules=self._rules)
        vault = await self._vault.get(identity.vault)
        source = identity.access_key
        if isinstance(source, KvAccessKey):
            await asyncio.to_thread(vault.read_access_key, source.mount, source.path, source.access_key_id_key,
                                    source.secret_access_key_key)
        if identity.totp.key:
            await asyncio.to_thread(vault.totp_code, identity.totp.mount, identity.totp.key, identity.totp.period)

    async def verify(self, name: str, uid: str, spec: Mapping[str, Any], body: Mapping[str, Any]) -> Verification:
        """Check, then write the Ready condition and observedGeneration on the identity's status."""
        status = dict(body.get("status") or {})
        generation = (body.get("metadata") or {}).get("generation")
        previous = find_condition(status.get("conditions"), reasons.READY)
        try:
            await self._check(name, uid, spec)
        except IssuingError as exc:
            # The MFAIdentity is the platform admin's (cluster-scoped): its status carries the details (Vault
            # address and paths); its Events, which land in a namespace others may read, do not.
            ready, reason, message, detail = False, exc.reason, exc.message, exc.detail
            stalled = not exc.transient  # the admin must fix the spec, Vault's policy or the keys
            log.warning("MFAIdentity %s not verified (%s): %s", name, exc.reason, exc.detail)
        else:
            ready, reason, stalled = True, reasons.VERIFIED, False
            message = detail = "Vault login works; the access key and the TOTP key are readable"
        conditions = set_condition(status.get("conditions"), type_=reasons.READY, status=ready, reason=reason,
                                   message=detail, generation=generation, now=datetime.now(UTC))
        # kstatus' abnormal-true condition: present only while True (kstatus.Compute: Failed).
        conditions = (set_condition(conditions, type_=reasons.STALLED, status=True, reason=reason,
                                    message=f"{detail}: the MFAIdentity's configuration must be fixed",
                                    generation=generation, now=datetime.now(UTC))
                      if stalled else remove_condition(conditions, reasons.STALLED))
        selector = ((spec.get("allowedNamespaceSelector") or {}).get("matchLabels") or {})
        warnings = selector_warnings((str(k), str(v)) for k, v in selector.items())
        for warning in warnings:
            if warning not in (status.get("warnings") or ()):
                log.warning("MFAIdentity %s: %s", name, warning)
        await self._kube.patch_identity_status(name, {"conditions": conditions, "observedGeneration": generation,
                                                      "warnings": warnings or None})  # None: a merge patch removes it
        changed = (previous is None or (previous.get("status") == "True") != ready
                   or status.get("observedGeneration") != generation)
        return Verification(ready=ready, reason=reason, message=message, changed=changed)
