"""A StepStore kept in a `coordination.k8s.io` Lease per MFA device.

The Lease is both the cross-instance lock (holderIdentity, expiring after
`lease_seconds` if its holder dies) and the durable record of the last spent
time step (an annotation), written before the code is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from vault_sts_operator.api import constants as c
from vault_sts_operator.clients.kube_rest import MERGE_PATCH, ApiError, KubeRest
from vault_sts_operator.domain.errors import KubernetesError

LAST_STEP_ANNOTATION = f"{c.GROUP}/last-step"
DEVICE_ANNOTATION = f"{c.GROUP}/mfa-device"


def lease_name(device: str) -> str:
    return "vault-sts-mfa-" + hashlib.sha256(device.encode()).hexdigest()[:16]


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseStepStore:
    def __init__(self, rest: KubeRest, *, namespace: str, holder: str,
                 lease_seconds: int = 30, busy_timeout: float = 120.0) -> None:
        self._rest = rest
        self._namespace = namespace
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._busy_timeout = busy_timeout

    def _path(self, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{quote(self._namespace)}/leases"
        return f"{base}/{quote(name)}" if name else base

    async def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._rest.request("GET", self._path(name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"reading Lease {self._namespace}/{name}: {exc}") from None

    def _held_by_other(self, lease: dict[str, Any]) -> bool:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self._holder:
            return False
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        if not renewed:
            return False
        age = (datetime.now(UTC) - datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))).total_seconds()
        return bool(age < (spec.get("leaseDurationSeconds") or self._lease_seconds))

    async def claim(self, device: str, step: int) -> int | None:
        name = lease_name(device)
        deadline = time.monotonic() + self._busy_timeout
        while True:
            lease = await self._read(name)
            now = _micro_time(datetime.now(UTC))
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
            if self._held_by_other(lease):
                if time.monotonic() > deadline:
                    raise KubernetesError(f"MFA device {device} stays locked by {lease['spec']['holderIdentity']} "
                                          f"(Lease {self._namespace}/{name})")
                await asyncio.sleep(0.5)
                continue
            annotations = dict(lease["metadata"].get("annotations") or {})
            last = int(annotations.get(LAST_STEP_ANNOTATION, "-1"))
            if step <= last:
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
