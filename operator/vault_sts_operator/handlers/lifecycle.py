"""Startup (settings, services), probes and cleanup."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
from collections.abc import Iterable
from typing import Any, cast

import kopf

from vault_sts_operator import metrics
from vault_sts_operator.api import constants as c
from vault_sts_operator.app import Services, build_services, kube_login
from vault_sts_operator.config import OperatorConfig

log = logging.getLogger(__name__)


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf's watches use the same login as the operator's own client (in a pod: KUBERNETES_SERVICE_HOST, no DNS)."""
    return kube_login(settings)


class IdentityDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf builds a diff base for every event of every resource, deep-copying the whole body
    (managedFields too); only MFAIdentity has change handlers that use one. AssumedRoleCredentials
    (thousands of events) get an empty one."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if body.get("kind") == c.CREDENTIAL_KIND:
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") == c.CREDENTIAL_KIND:
            return None
        return super().fetch(body=body)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config") or OperatorConfig()
    # Our own finalizer and annotation prefix, not kopf's defaults.
    settings.persistence.finalizer = c.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = IdentityDiffBaseStorage(prefix=c.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING if not config.verbose else logging.INFO
    settings.posting.enabled = True
    # Watches: reconnect well before load balancers cut idle streams (kopf docs, "Configuration").
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.execution.max_workers = config.worker_threads
    # Credentials and the operator's Secrets are listed and watched by services/watch.py, not kopf: kopf
    # watches MFAIdentities (its handlers) and the peering object only, a handful of objects.
    if config.peering_name:
        # kopf pauses every operator that sees a live peer of the same priority (kopf >= 1.29), so replicas
        # that all keep the default priority 0 all pause and none works. A random priority per instance keeps
        # exactly one active: the highest; when it dies, the next one resumes once its peering entry expires.
        settings.peering.priority = 1 + secrets.randbelow(2**31 - 2)
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=config.worker_threads, thread_name_prefix="vso"))
    services = build_services(config, settings)
    services.controller.start()
    if services.peering is not None:
        services.peering.start()  # pauses the scheduler at once, until the peering object says this is the one
    services.watches.start()
    memo["services"] = services
    metrics.record_build_info()
    if services.metrics_server is not None:
        await services.metrics_server.start()
    log.info("vault-sts-operator started (instance %s, namespaces %s)", config.instance_id,
             ", ".join(config.namespaces) or "all")


@kopf.on.probe(id="credentials")
def probe_credentials(memo: kopf.Memo, **_: Any) -> int:
    services = memo.get("services")
    return len(services.controller) if services is not None else 0


@kopf.on.cleanup()
async def shut_down(memo: kopf.Memo, **_: Any) -> None:
    services: Services | None = memo.get("services")
    if services is not None:
        if services.metrics_server is not None:
            await services.metrics_server.stop()
        await services.watches.stop()
        if services.peering is not None:
            await services.peering.stop()
        await services.controller.stop()
        await services.kube.rest.close()
