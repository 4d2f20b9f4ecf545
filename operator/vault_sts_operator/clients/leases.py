"""A StepStore kept in a `coordination.k8s.io` Lease per MFA device.

The Lease is both the cross-instance lock (holderIdentity, expiring after
`lease_seconds` if its holder dies) and the durable record of the last spent
time step (an annotation), written before the code is sent.

Expiry is judged as client-go's leader election does: by how long this replica has
seen the same renewTime on its own monotonic clock, never by comparing another
replica's timestamp with ours. A holder whose clock runs ahead cannot make the others
wait longer than the lease duration; the skew is logged and exported as a metric.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from vault_sts_operator import metrics
from vault_sts_operator.api import constants as c
from vault_sts_operator.clients import kube_paths as paths
from vault_sts_operator.clients.kube_rest import MERGE_PATCH, ApiError, KubeRest
from vault_sts_operator.domain.errors import KubernetesError
from vault_sts_operator.domain.timefmt import format_micro_time

log = logging.getLogger(__name__)

LAST_STEP_ANNOTATION = f"{c.GROUP}/last-step"
# A renewTime further ahead of our clock than this is reported as clock skew.
SKEW_TOLERANCE_SECONDS = 5.0
DEVICE_ANNOTATION = f"{c.GROUP}/mfa-device"


def lease_name(device: str) -> str:
    return "vault-sts-mfa-" + hashlib.sha256(device.encode()).hexdigest()[:16]


class LeaseStepStore:
    def __init__(self, rest: KubeRest, *, namespace: str, holder: str,
                 lease_seconds: int = 30, busy_timeout: float = 120.0) -> None:
        self._rest = rest
        self._namespace = namespace
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._busy_timeout = busy_timeout
        # Lease name -> (holder, renewTime, when this replica first saw that pair, on its monotonic clock)
        self._observed: dict[str, tuple[str, str, float]] = {}

    def _path(self, name: str = "") -> str:
        return paths.leases(self._namespace, name)

    async def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._rest.request("GET", self._path(name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"reading Lease {self._namespace}/{name}: {exc}") from None

    def _held_by_other(self, name: str, lease: dict[str, Any]) -> bool:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self._holder:
            return False
        renewed = str(spec.get("renewTime") or spec.get("acquireTime") or "")
        if not renewed:
            return False
        duration = spec.get("leaseDurationSeconds") or self._lease_seconds
        age = (datetime.now(UTC) - datetime.fromisoformat(renewed.replace("Z", "+00:00"))).total_seconds()
        if age >= duration:  # expired by our clock
            return False
        seen = self._observed.get(name)
        if seen is None or seen[:2] != (holder, renewed):
            seen = (str(holder), renewed, time.monotonic())
            self._observed[name] = seen
            ahead = -age
            if ahead > SKEW_TOLERANCE_SECONDS:
                metrics.CLOCK_SKEW_SECONDS.labels(source="lease").set(ahead)
                metrics.CLOCK_SKEW_EVENTS.labels(source="lease").inc()
                log.warning("Lease %s/%s was renewed by %s about %.0fs in the future of this replica's clock: "
                            "a replica's clock runs ahead (or this one's behind); its hold is judged by this "
                            "replica's own clock. Check NTP on the operator's nodes.", self._namespace, name,
                            holder, ahead)
        # Not expired by our clock, but a renewTime from a clock running ahead would hold it for as long as the
        # skew: held at most `duration` after this replica first saw that renewTime.
        return bool(time.monotonic() - seen[2] < duration)

    async def claim(self, device: str, step: int, *, supersede: int | None = None) -> int | None:
        name = lease_name(device)
        deadline = time.monotonic() + self._busy_timeout
        while True:
            lease = await self._read(name)
            now = format_micro_time(datetime.now(UTC))
            if lease is None:
                body = {
                    "metadata": {"name": name, "namespace": self._namespace,
                                 "annotations": {LAST_STEP_ANNOTATION: str(step), DEVICE_ANNOTATION: device}},
                    "spec": {"holderIdentity": self._holder, "leaseDurationSeconds": self._lease_seconds,
                             "acquireTime": now, "renewTime": now},
                }
                try:
                    await self._rest.request("POST", self._path(), body)
                    return None
                except ApiError as exc:
                    if exc.status != 409:
                        raise KubernetesError(f"creating Lease {self._namespace}/{name}: {exc}") from None
                    continue
            if self._held_by_other(name, lease):
                if time.monotonic() > deadline:
                    raise KubernetesError(f"MFA device {device} stays locked by {lease['spec']['holderIdentity']} "
                                          f"(Lease {self._namespace}/{name})")
                await asyncio.sleep(0.5)
                continue
            annotations = dict(lease["metadata"].get("annotations") or {})
            last = int(annotations.get(LAST_STEP_ANNOTATION, "-1"))
            if step <= last and last != supersede:
                return last
            annotations[LAST_STEP_ANNOTATION] = str(step)
            annotations[DEVICE_ANNOTATION] = device
            body = {
                "metadata": {"name": name, "namespace": self._namespace, "annotations": annotations,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": self._holder, "leaseDurationSeconds": self._lease_seconds,
                         "acquireTime": now, "renewTime": now},
            }
            try:
                await self._rest.request("PUT", self._path(name), body)
                return None
            except ApiError as exc:
                if exc.status != 409:
                    raise KubernetesError(f"updating Lease {self._namespace}/{name}: {exc}") from None

    async def release(self, device: str) -> None:
        name = lease_name(device)
        lease = await self._read(name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self._holder:
            return
        patch = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                 "spec": {"holderIdentity": None}}
        try:
            await self._rest.request("PATCH", self._path(name), patch, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise KubernetesError(f"releasing Lease {self._namespace}/{name}: {exc}") from None
