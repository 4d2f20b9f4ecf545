"""Builds the services once, at startup, from the operator's config (the composition root)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vault_sts_operator.api.specs import IdentitySpec
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.kube_config import default_login
from vault_sts_operator.clients.kube_rest import KubeRest
from vault_sts_operator.clients.leases import LeaseStepStore
from vault_sts_operator.clients.sts import StsGateway
from vault_sts_operator.clients.vault_factory import VaultSessionFactory
from vault_sts_operator.config import OperatorConfig
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.rate import Rate
from vault_sts_operator.domain.timefmt import format_time
from vault_sts_operator.services.controller import CredentialController
from vault_sts_operator.services.credential_store import PodIdentityStore
from vault_sts_operator.services.identity_catalog import IdentityCatalog
from vault_sts_operator.services.identity_verification import IdentityVerification
from vault_sts_operator.services.issuer import CredentialIssuer
from vault_sts_operator.services.limiter import BlockingCalls
from vault_sts_operator.services.metrics_server import MetricsServer, build_metrics_server
from vault_sts_operator.services.mfa_device import MfaDeviceGuard
from vault_sts_operator.services.mfa_sessions import KvSessionProvider, MfaSessionCache, VaultAwsSessionProvider
from vault_sts_operator.services.reconciler import CredentialReconciler
from vault_sts_operator.services.restarts import RolloutRestarter
from vault_sts_operator.services.secret_writer import SecretWriter
from vault_sts_operator.services.verifier import IdentityVerifier
from vault_sts_operator.services.watch import SecretDeletions, Watches

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: OperatorConfig
    kube: KubeGateway
    vault: VaultSessionFactory
    issuer: CredentialIssuer
    reconciler: CredentialReconciler
    verifier: IdentityVerifier
    controller: CredentialController
    watches: Watches
    identities: IdentityCatalog
    verification: IdentityVerification
    metrics_server: MetricsServer | None = None  # None: --metrics-port=0
    store: PodIdentityStore | None = None  # None: mode PodIdentity is not enabled


def build_services(config: OperatorConfig) -> Services:
    """Call inside the running event loop (the Kubernetes client's session belongs to it)."""
    # One connection per pass in flight (each TLS connection holds a read buffer of about 130 KB).
    rest = KubeRest(default_login(), pool_size=config.max_concurrent_passes)
    kube = KubeGateway(rest)
    vault = VaultSessionFactory(
        kube, sa_token_file=config.vault_sa_token_file,
        default_address=config.default_vault.address if config.default_vault else "",
        service_account=(config.lease_namespace, config.service_account) if config.service_account else None)
    devices = MfaDeviceGuard(LeaseStepStore(rest, namespace=config.lease_namespace, holder=config.instance_id))
    sts = StsGateway(max_pool=config.sts_concurrency * 2)
    calls = BlockingCalls(config.sts_concurrency,
                          Rate(config.sts_rate, config.sts_burst) if config.sts_rate > 0 else None)

    async def record_session(identity: IdentitySpec, creds: TemporaryCredentials) -> None:
        try:
            await kube.patch_identity_status(identity.name, {"sessionExpiration": format_time(creds.expiration),
                                                             "sessionCreated": format_time(datetime.now(UTC))})
        except IssuingError as exc:
            log.warning("could not record the MFA session on MFAIdentity %s: %s", identity.name, exc.message)

    async def post_event(body: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        try:
            await kube.post_event(body, type_=type_, reason=reason, message=message, now=datetime.now(UTC))
        except IssuingError as exc:  # an Event is a courtesy: the status already says the same
            log.warning("%s", exc.message)

    sessions = MfaSessionCache(kv=KvSessionProvider(vault=vault, sts=sts, devices=devices, calls=calls),
                               vault_aws=VaultAwsSessionProvider(vault=vault, devices=devices),
                               on_session=record_session)
    issuer = CredentialIssuer(vault=vault, sts=sts, devices=devices, sessions=sessions, calls=calls)
    store = PodIdentityStore() if config.pod_identity is not None else None
    reconciler = CredentialReconciler(
        store=store,
        kube=kube, issuer=issuer, writer=SecretWriter(kube), events=post_event,
        restarter=RolloutRestarter(kube, debounce_seconds=config.restart_debounce_seconds),
        rotate_min_interval=timedelta(seconds=config.rotate_min_interval_seconds),
        max_sleep_seconds=config.secret_check_seconds)

    def identity_changed(name: str) -> None:  # an MFAIdentity appeared, changed or went: its credentials re-decide
        controller.identity_changed(name)  # (the controller, built next, resolves its passes' identities here)

    identities = IdentityCatalog(config, on_change=identity_changed)
    controller = CredentialController(reconciler=reconciler, kube=kube, identities=identities,
                                      workers=config.max_concurrent_passes, trust_known_secret=config.watch_secrets,
                                      store=store)
    verifier = IdentityVerifier(vault=vault, kube=kube, default_vault=config.default_vault,
                                operator_namespace=config.lease_namespace, rules=config.connection_rules)
    verification = IdentityVerification(verifier, events=post_event, on_changed=controller.identity_changed,
                                        on_deleted=sessions.forget)

    def identity_event(body: Mapping[str, Any], event_type: str | None) -> None:
        identities.observe(body, event_type)
        verification.observe(body, event_type)

    def identities_listed(seen: set[tuple[str, str]]) -> None:
        identities.listed(seen)
        verification.listed(seen)

    watches = Watches(kube, on_identity=identity_event, on_identities_listed=identities_listed,
                      credentials=controller, namespaces=config.namespaces,
                      secrets=SecretDeletions(controller.secret_deleted) if config.watch_secrets else None,
                      stall_after=config.watch_stall_seconds)
    return Services(config=config, kube=kube, vault=vault, issuer=issuer, reconciler=reconciler, verifier=verifier,
                    controller=controller, watches=watches, identities=identities, verification=verification,
                    store=store,
                    metrics_server=build_metrics_server(port=config.metrics_port, secure=config.metrics_secure,
                                                        cert_dir=config.metrics_cert_dir, reviewer=kube)
                    if config.metrics_port else None)
