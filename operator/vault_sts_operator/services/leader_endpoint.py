"""The leader publishes itself as the only endpoint of the Pod Identity Service (docs/design/pod-identity.md 6.4).

The chart's Service `<fullname>-pod-identity` has no selector; the replica that leads writes its EndpointSlice
`<service>-leader` with its own pod IP, when it starts leading and again whenever the slice says otherwise (read
every `check_seconds`). Standbys never write it; a replica that stops leading answers 503 NotLeader until the
next leader has replaced the address. Not chosen: readiness = leadership (a rollout's new pod would never become
Ready, so the rollout and the PodDisruptionBudget would stall) and a leader label on the pod (needs `patch pods`,
and two pods carry it during a partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from vault_sts_operator.clients.kube_rest import ApiError, KubeRest

log = logging.getLogger(__name__)

MANAGED_BY = "vaultsts.io-operator"


def slice_path(namespace: str, name: str = "") -> str:
    base = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    return f"{base}/{name}" if name else base


def desired_slice(*, namespace: str, service: str, address: str, port: int, port_name: str = "https"
                  ) -> dict[str, Any]:
    family = "IPv6" if ":" in address else "IPv4"
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-leader", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": family,
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


class LeaderEndpoint:
    def __init__(self, rest: KubeRest, *, namespace: str, service: str, address: str, port: int,
                 leading: Callable[[], bool], check_seconds: float = 10.0) -> None:
        self._rest = rest
        self._namespace, self._service, self._address, self._port = namespace, service, address, port
        self._leading = leading
        self._check = check_seconds
        self._nudge = asyncio.Event()
        self._owner_ref: dict[str, Any] | None = None
        self.writes = 0

    def leadership_changed(self) -> None:
        """Called when this replica starts (or stops) leading: publish at once rather than at the next check."""
        self._nudge.set()

    async def run(self) -> None:
        """A supervised task: keep the slice pointing at this replica while it leads."""
        while True:
            if self._leading():
                try:
                    await self.ensure()
                except ApiError as exc:
                    log.warning("pod identity: could not publish this replica as the agents' endpoint: %s", exc)
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), self._check)

    async def _owner(self) -> list[dict[str, Any]]:
        """The Service as the slice's owner, so deleting the Service (helm uninstall) deletes the slice."""
        if self._owner_ref is None:
            service = await self._rest.request("GET", f"/api/v1/namespaces/{self._namespace}/services/{self._service}")
            self._owner_ref = {"apiVersion": "v1", "kind": "Service", "name": self._service,
                               "uid": str((service.get("metadata") or {}).get("uid"))}
        return [self._owner_ref]

    async def ensure(self) -> None:
        want = desired_slice(namespace=self._namespace, service=self._service, address=self._address,
                             port=self._port)
        owners = await self._owner()
        want["metadata"]["ownerReferences"] = owners
        name = want["metadata"]["name"]
        try:
            current = await self._rest.request("GET", slice_path(self._namespace, name))
        except ApiError as exc:
            if exc.status != 404:
                raise
            await self._rest.request("POST", slice_path(self._namespace), want, parse=False)
            self.writes += 1
            log.info("pod identity: published %s:%d as the agents' endpoint (EndpointSlice %s)", self._address,
                     self._port, name)
            return
        meta = current.get("metadata") or {}
        if all(current.get(k) == want[k] for k in ("addressType", "endpoints", "ports")) and \
                (meta.get("labels") or {}).get("kubernetes.io/service-name") == self._service and \
                [o.get("uid") for o in meta.get("ownerReferences") or ()] == [o["uid"] for o in owners]:
            return
        want["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        await self._rest.request("PUT", slice_path(self._namespace, name), want, parse=False)
        self.writes += 1
        log.info("pod identity: published %s:%d as the agents' endpoint (EndpointSlice %s, replacing %s)",
                 self._address, self._port, name,
                 ",".join(a for e in current.get("endpoints") or () for a in e.get("addresses") or ()) or "none")
