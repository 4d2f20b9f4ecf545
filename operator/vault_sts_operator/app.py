"""Builds the services once, at startup, from the operator's config."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vault_sts_operator.api.specs import IdentitySpec
from vault_sts_operator.api.timefmt import format_time
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.kube_rest import KubeRest
from vault_sts_operator.clients.leases import LeaseStepStore
from vault_sts_operator.clients.sts import StsGateway
from vault_sts_operator.clients.vault_factory import VaultSessionFactory
from vault_sts_operator.config import OperatorConfig
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.services.issuer import CredentialIssuer
from vault_sts_operator.services.mfa_device import MfaDeviceGuard
from vault_sts_operator.services.reconciler import CredentialReconciler, EventSink
from vault_sts_operator.services.restarts import RolloutRestarter
from vault_sts_operator.services.secret_writer import SecretWriter
from vault_sts_operator.services.wakeups import Wakeups

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: OperatorConfig
    kube: KubeGateway
    vault: VaultSessionFactory
    issuer: CredentialIssuer
    reconciler: CredentialReconciler
    wakeups: Wakeups
    # Bounds the passes in flight: a thousand CRs applied at once are issued in waves, which
    # keeps the memory of in-flight requests (and the heap it leaves behind) small.
    passes: asyncio.Semaphore


def build_services(config: OperatorConfig, rest: KubeRest, events: EventSink) -> Services:
    kube = KubeGateway(rest)
    vault = VaultSessionFactory(kube, sa_token_file=config.vault_sa_token_file)
    devices = MfaDeviceGuard(LeaseStepStore(rest, namespace=config.lease_namespace, holder=config.instance_id))

    def record_session(identity: IdentitySpec, creds: TemporaryCredentials) -> None:
        try:
            kube.patch_identity_status(identity.name, {"sessionExpiration": format_time(creds.expiration),
                                                       "sessionCreated": format_time(datetime.now(UTC))})
        except IssuingError as exc:
            log.warning("could not record the MFA session on MFAIdentity %s: %s", identity.name, exc.message)

    issuer = CredentialIssuer(vault=vault, sts=StsGateway(max_pool=config.sts_concurrency * 2), devices=devices,
                              sts_concurrency=config.sts_concurrency, on_session=record_session)
    reconciler = CredentialReconciler(
        kube=kube, issuer=issuer, writer=SecretWriter(kube), events=events,
        restarter=RolloutRestarter(kube, debounce_seconds=config.restart_debounce_seconds),
        rotate_min_interval=timedelta(seconds=config.rotate_min_interval_seconds),
        max_sleep_seconds=config.secret_check_seconds)
    return Services(config=config, kube=kube, vault=vault, issuer=issuer, reconciler=reconciler, wakeups=Wakeups(),
                    passes=asyncio.Semaphore(config.max_concurrent_passes))
