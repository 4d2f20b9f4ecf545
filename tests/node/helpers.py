"""Test helpers for the operator as a pod: which replica issued, kopf peering, the figures of the suite.
Manifests, Helm values and pod waits live in devstack/workloads.py (the demo uses them too)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Kube, wait_for

ROOT = Path(__file__).resolve().parents[2]
RESTARTED_AT = "vaultsts.io/restartedAt"


def issued_in_log(text: str, namespace: str, name: str) -> int:
    """How many times an operator log says it issued credential ``namespace/name`` (first issue or rotation)."""
    return sum(1 for line in text.splitlines() if f"{namespace}/{name}: issued " in line)


def peers(kube: Kube, peering: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
    """The live entries of a ClusterKopfPeering (or a KopfPeering in ``namespace``): peer id -> priority etc."""
    if namespace is None:
        body = kube.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    else:
        body = kube.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)
    now = time.time()
    live = {}
    for peer, info in (body.get("status") or {}).items():
        if not isinstance(info, dict) or "priority" not in info:
            continue
        seen = datetime.fromisoformat(str(info["lastseen"])).timestamp()
        if seen + int(info.get("lifetime", 60)) > now:
            live[peer] = info
    return live


def active_peer(kube: Kube, peering: str, pod_names: set[str], namespace: str | None = None) -> str:
    """The pod kopf keeps active: the live peer with the highest priority (all others pause)."""
    def find() -> str | None:
        live = {p: i for p, i in peers(kube, peering, namespace).items() if p in pod_names}
        if set(live) != pod_names:
            return None
        return max(live, key=lambda p: int(live[p]["priority"]))

    return str(wait_for(f"pods {sorted(pod_names)} in peering {peering}", find, timeout=60))


@dataclass
class Figures:
    """Measured figures of the suite, printed at the end and written to ``.stack/node-report.json``."""

    values: dict[str, Any] = field(default_factory=dict)

    def record(self, name: str, value: Any) -> None:
        self.values[name] = round(value, 1) if isinstance(value, float) else value
