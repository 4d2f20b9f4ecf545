"""MFAIdentity: indexed for the credential daemons, verified against Vault, dependents woken on change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from vault_sts_operator.api import constants as c
from vault_sts_operator.api import reasons
from vault_sts_operator.api.conditions import set_condition
from vault_sts_operator.api.specs import IdentitySpec, KvAccessKey, parse_identity
from vault_sts_operator.app import Services
from vault_sts_operator.config import OperatorConfig
from vault_sts_operator.domain.errors import IdentityNotFoundError, IssuingError
from vault_sts_operator.services.reconciler import IdentityResolver

log = logging.getLogger(__name__)

VERIFY_INTERVAL_SECONDS = 300.0


@kopf.index(c.GROUP, c.VERSION, c.IDENTITY_PLURAL, id="identity_index")
def identity_index(name: str, uid: str, spec: kopf.Spec, **_: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    return {name: (uid, dict(spec))}


def resolver_from_index(index: kopf.Index[str, Any], config: OperatorConfig) -> IdentityResolver:
    def resolve(name: str) -> IdentitySpec:
        entries = list(index.get(name, ()))
        if not entries:
            raise IdentityNotFoundError(f"MFAIdentity {name!r} does not exist")
        uid, spec = entries[0]
        return parse_identity(name, uid, spec, default_vault=config.default_vault,
                              operator_namespace=config.lease_namespace, rules=config.connection_rules)

    return resolve


async def verify(services: Services, name: str, uid: str, spec: Mapping[str, Any]) -> None:
    """Check that Vault accepts the operator and names what the identity points at.

    Reads a TOTP code (which spends nothing: only sending it to AWS does) and the
    access key's KV path; never calls STS.
    """
    identity = parse_identity(name, uid, spec, default_vault=services.config.default_vault,
                              operator_namespace=services.config.lease_namespace,
                              rules=services.config.connection_rules)
    vault = await asyncio.to_thread(services.vault.get, identity.vault)
    source = identity.access_key
    if isinstance(source, KvAccessKey):
        await asyncio.to_thread(vault.read_access_key, source.mount, source.path, source.access_key_id_key,
                                source.secret_access_key_key)
    if identity.totp.key:
        await asyncio.to_thread(vault.totp_code, identity.totp.mount, identity.totp.key, identity.totp.period)


async def _verify_and_report(body: kopf.Body, name: str, uid: str, spec: kopf.Spec, memo: kopf.Memo) -> bool:
    services: Services = memo["services"]
    status = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    now = datetime.now(UTC)
    try:
        await verify(services, name, uid, spec)
    except IssuingError as exc:
        # The MFAIdentity is the platform admin's (cluster-scoped): its status carries the details (Vault
        # address and paths); its Events, which land in a namespace others may read, do not.
        conditions = set_condition(status.get("conditions"), type_=reasons.READY, status=False, reason=exc.reason,
                                   message=exc.detail, generation=generation, now=now)
        kopf.warn(body, reason=exc.reason, message=exc.message)
        log.warning("MFAIdentity %s not verified (%s): %s", name, exc.reason, exc.detail)
        ok = False
    else:
        conditions = set_condition(status.get("conditions"), type_=reasons.READY, status=True,
                                   reason=reasons.VERIFIED,
                                   message="Vault login works; the access key and the TOTP key are readable",
                                   generation=generation, now=now)
        ok = True
    await asyncio.to_thread(services.kube.patch_identity_status, name,
                            {"conditions": conditions, "observedGeneration": generation})
    services.wakeups.identity_changed(name)
    return ok


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
        services.wakeups.identity_changed(name)
