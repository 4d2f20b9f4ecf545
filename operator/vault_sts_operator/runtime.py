"""The operator's process, from start to exit; one credential's way through it is in docs/architecture.md.

- `build_services` (app.py) wires the clients and services once.
- Every long-running task runs under the supervisor (services/supervisor.py): the identity, credential and
  Secret watches, the credential scheduler, the identity verification scheduler, the leader election, the
  metrics and probe servers. A task that fails is logged and restarted with backoff; one that cannot be
  kept running ends the process with status 1, and the kubelet restarts the pod.
- With leader election on (the chart's default), both schedulers stay paused until this replica holds the
  Lease (services/leader.py); the watches run on every replica, so a standby that takes over knows every
  object already.
- SIGTERM (a rollout, `kubectl delete pod`) pauses the schedulers, lets passes in flight finish (at most
  `DRAIN_SECONDS`), releases the Lease so the other replica takes over at once, then stops every task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

from vault_sts_operator import metrics
from vault_sts_operator.app import Services, build_services
from vault_sts_operator.clients import kube_config
from vault_sts_operator.config import OperatorConfig
from vault_sts_operator.services.health import HealthServer
from vault_sts_operator.services.leader import LeaderElector
from vault_sts_operator.services.leader_endpoint import LeaderEndpoint
from vault_sts_operator.services.metrics_server import CertificateFiles, self_signed_context
from vault_sts_operator.services.pod_identity_server import PodIdentityServer
from vault_sts_operator.services.supervisor import Supervisor, SupervisorStopped

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0  # how long a shutdown waits for passes in flight before it releases the Lease


class _Both:
    """The two schedulers, paused and resumed together by the leader election; in mode PodIdentity also what the
    replica holds for agents (dropped when it stops leading) and its EndpointSlice (published when it leads)."""

    def __init__(self, services: Services) -> None:
        self._schedulers = (services.controller.scheduler, services.verification.scheduler)
        self._store = services.store
        self.publisher: LeaderEndpoint | None = None

    def pause(self) -> None:
        for scheduler in self._schedulers:
            scheduler.pause()
        if self._store is not None:
            self._store.drop_all()
        if self.publisher is not None:
            self.publisher.leadership_changed()

    def resume(self) -> None:
        for scheduler in self._schedulers:
            scheduler.resume()
        if self.publisher is not None:
            self.publisher.leadership_changed()


def _pod_identity(config: OperatorConfig, services: Services, both: _Both, leading: Callable[[], bool]
                  ) -> tuple[PodIdentityServer, LeaderEndpoint | None] | None:
    """Mode PodIdentity's endpoint for node agents, and (behind the chart's Service) the leader's EndpointSlice."""
    pod = config.pod_identity
    if pod is None or services.store is None:
        return None
    certificates = CertificateFiles(pod.cert_dir) if pod.cert_dir else None
    tls = certificates.context if certificates is not None else self_signed_context([pod.pod_ip] if pod.pod_ip else [])
    server = PodIdentityServer(store=services.store, reviewer=services.kube, leading=leading, audience=pod.audience,
                               agent_audience=pod.agent_audience,
                               agent_account=(config.lease_namespace, pod.agent_service_account), port=pod.port,
                               tls=tls, certificates=certificates)
    publisher = None
    if pod.service:
        publisher = LeaderEndpoint(services.kube.rest, namespace=config.lease_namespace, service=pod.service,
                                   address=pod.pod_ip, port=pod.port, leading=leading)
        both.publisher = publisher
    return server, publisher


def _supervise(supervisor: Supervisor, services: Services, elector: LeaderElector | None,
               health: HealthServer | None,
               pod_identity: tuple[PodIdentityServer, LeaderEndpoint | None] | None = None) -> None:
    supervisor.add("credential scheduler", services.controller.scheduler.run)
    supervisor.add("identity verification", services.verification.scheduler.run)
    for name, factory, stall_after in services.watches.supervised(supervisor.progress):
        supervisor.add(name, factory, stall_after=stall_after)
    if elector is not None:
        supervisor.add("leader election", elector.run)
    if services.metrics_server is not None:
        supervisor.add("metrics server", services.metrics_server.run)
    if health is not None:
        supervisor.add("probes", health.run)
    if pod_identity is not None:
        server, publisher = pod_identity
        supervisor.add("pod identity endpoint", server.run)
        if publisher is not None:
            supervisor.add("pod identity leader endpoint", publisher.run)


async def serve(config: OperatorConfig) -> int:
    """Run until SIGTERM/SIGINT (0) or until a task cannot be kept running (1)."""
    try:  # once, before anything starts: a missing or unusable login is one clear line, not five tracebacks
        kube_config.login()
    except kube_config.KubeConfigError as exc:
        log.error("cannot start: no usable Kubernetes credentials: %s", exc)
        return 1
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=config.worker_threads,
                                                                    thread_name_prefix="vso"))
    services = build_services(config)
    both = _Both(services)
    elector = (LeaderElector(services.kube.rest, both, namespace=config.lease_namespace,
                             name=config.leader_election_lease, identity=config.instance_id, timing=config.election)
               if config.leader_election_lease else None)

    def role() -> str:
        if elector is None:
            return "standalone"
        return "leader" if elector.leading else "standby"

    supervisor = Supervisor()
    health = None
    if config.liveness_endpoint:
        where = urlsplit(config.liveness_endpoint)
        health = HealthServer(host=where.hostname or "0.0.0.0", port=where.port or 8080,  # noqa: S104
                              stalled=supervisor.stalled, role=role)
    _supervise(supervisor, services, elector, health,
               _pod_identity(config, services, both, lambda: elector is None or elector.leading))
    metrics.record_build_info()
    if elector is not None:
        both.pause()  # no pass before this replica holds the Lease
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    supervisor.start()
    log.info("vault-sts-operator started (instance %s, namespaces %s, %s)", config.instance_id,
             ", ".join(config.namespaces) or "all",
             f"leader election on Lease {config.lease_namespace}/{config.leader_election_lease}"
             if elector is not None else "standalone")
    failed = asyncio.create_task(supervisor.wait(), name="supervisor")
    stop = asyncio.create_task(stopping.wait(), name="signals")
    await asyncio.wait({failed, stop}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if failed.done() and not failed.cancelled() and isinstance(failed.exception(), SupervisorStopped):
        log.error("stopping: %s", failed.exception())
        status = 1
    else:
        log.info("stopping (signal)")
    both.pause()
    if not await services.controller.scheduler.drain(DRAIN_SECONDS):
        log.warning("stopping with credential passes still running after %.0fs", DRAIN_SECONDS)
    if elector is not None:
        await elector.release()
    await supervisor.stop()
    for task in (failed, stop):
        task.cancel()
    await services.kube.rest.close()
    log.info("vault-sts-operator stopped")
    return status
