"""Test helpers for the operator as a pod: which replica issued, which one leads (the leader election's Lease),
when leadership changed hands (the operator's log lines), the figures of the suite. Manifests, Helm values and pod
waits live in devstack/workloads.py (the demo uses them too)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.env import StackEnv
from devstack.workloads import operator_pods
from tests.e2e.helpers import Kube, wait_for

ROOT = Path(__file__).resolve().parents[2]
RESTARTED_AT = "vaultsts.io/restartedAt"


def issued_in_log(text: str, namespace: str, name: str) -> int:
    """How many times an operator log says it issued credential ``namespace/name`` (first issue or rotation)."""
    return sum(1 for line in text.splitlines() if f"{namespace}/{name}: issued " in line)


def lease_holder(kube: Kube, namespace: str, lease: str) -> str:
    """The leader election Lease's ``spec.holderIdentity``: '' when released, never taken, or absent."""
    try:
        body = client.CoordinationV1Api(kube.api).read_namespaced_lease(lease, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str(body.spec.holder_identity or "")


def holder_pod(holder: str, pod_names: set[str]) -> str | None:
    """The pod whose operator is ``holder``: its instance id is ``<hostname>-<pid>``, and a pod's hostname is its
    name."""
    found = [p for p in pod_names if holder.startswith(f"{p}-") and holder[len(p) + 1:].isdigit()]
    return found[0] if len(found) == 1 else None


def leader_pod(kube: Kube, namespace: str, lease: str, pod_names: set[str], timeout: float = 60) -> str:
    """The pod that holds the release's Lease (waiting until one of ``pod_names`` does)."""
    return str(wait_for(f"one of {sorted(pod_names)} holding Lease {namespace}/{lease}",
                        lambda: holder_pod(lease_holder(kube, namespace, lease), pod_names), timeout=timeout,
                        interval=0.2))


class LeaseWatch:
    """Samples a Lease's holder every ``interval`` seconds in a thread: (wall time, holder) at each change."""

    def __init__(self, kube: Kube, namespace: str, lease: str, interval: float = 0.1) -> None:
        self._kube, self._namespace, self._lease, self._interval = kube, namespace, lease, interval
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            holder = lease_holder(self._kube, self._namespace, self._lease)
            if not self.changes or self.changes[-1][1] != holder:
                self.changes.append((time.time(), holder))
            self._stop.wait(self._interval)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        wait_for("the first Lease sample", lambda: self.changes, timeout=10, interval=0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def successor(self, killed: str, release: str) -> str | None:
        """The operator pod of ``release`` holding the Lease at the last sample, if not ``killed``: the standby,
        which has watched the Lease run out, or the Deployment's replacement, which may take it a lease duration
        after it first saw the dead leader's record (client-go's rule) and so wins when the standby's first look at
        that record came late in its jittered retry period (2 of 12 SIGKILLs on the local node)."""
        others = {p.metadata.name for p in operator_pods(self._kube.core, self._namespace, release)} - {killed}
        return holder_pod(self.changes[-1][1], others)

    def taken_by(self, pod: str) -> float:
        """When ``pod`` was first sampled holding the Lease."""
        return next(t for t, holder in self.changes if holder_pod(holder, {pod}))


class FollowedLog:
    """A pod's log with the container runtime's timestamps, followed in a thread until the container ends (the
    log of a pod a rollout deletes is gone once the pod is)."""

    def __init__(self, core: Any, namespace: str, pod: str) -> None:
        self.pod = pod
        self.lines: list[str] = []
        self._core, self._namespace = core, namespace
        self._thread = threading.Thread(target=self._run, name=f"log-{pod}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        response = self._core.read_namespaced_pod_log(self.pod, self._namespace, follow=True, timestamps=True,
                                                      _preload_content=False)
        pending = b""
        try:
            for chunk in response.stream(4096):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)
        except Exception as exc:  # the stream ends with the container, however it ends
            self.lines.append(f"(log stream ended: {exc!r})")
        finally:
            if pending:
                self.lines.append(pending.decode(errors="replace"))
            response.release_conn()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)


# The operator's leader election lines (services/leader.py, runtime.py), in both log formats.
ELECTION_LINES = {"leads": re.compile(r"leader election: \S+ leads \(Lease"),
                  "no longer leads": re.compile(r"leader election: \S+ no longer leads"),
                  "released": re.compile(r"leader election: released Lease"),
                  "stopping": re.compile(r"stopping \(signal\)")}


def election_events(pod: str, lines: list[str]) -> list[tuple[float, str, str]]:
    """(wall time, pod, what) for each leader election line of a log read with ``timestamps=True``."""
    events = []
    for line in lines:
        stamp, _, text = line.partition(" ")
        for what, pattern in ELECTION_LINES.items():
            if pattern.search(text):
                events.append((datetime.fromisoformat(stamp).timestamp(), pod, what))
    return events


def leaderless_gaps(events: list[tuple[float, str, str]], leader: str, since: float) -> list[tuple[float, str, str]]:
    """The intervals with no replica leading after ``since``, when ``leader`` led at ``since``: (seconds, who
    stopped, who took over). A leader stops being active at its first "stopping" (it pauses before draining) or
    "no longer leads" line, and a replica is active again from its "leads" line."""
    gaps = []
    current: str | None = leader
    stopped_at, stopped_by = 0.0, ""
    for moment, pod, what in sorted(e for e in events if e[0] >= since):
        if what in ("stopping", "no longer leads") and pod == current:
            current, stopped_at, stopped_by = None, moment, pod
        elif what == "leads":
            assert current is None, f"{pod} leads at {moment:.3f} while {current} still does"
            gaps.append((moment - stopped_at, stopped_by, pod))
            current = pod
    if current is None:
        gaps.append((float("inf"), stopped_by, ""))
    return gaps


def sigkill_container(stack: StackEnv, pod: Any) -> None:
    """SIGKILL the pod's operator container through the node's containerd: no SIGTERM first, so no graceful
    shutdown (a forced ``kubectl delete --grace-period=0`` still has the kubelet send SIGTERM, and the operator
    would release its Lease)."""
    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    sock = Path(stack.extra["VSO_CONTAINERD_ADDRESS"])
    subprocess.run(["ctr", "--address", sock.name, "--namespace", "k8s.io", "tasks", "kill", "--signal", "SIGKILL",
                    container_id], cwd=sock.parent, check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Figures:
    """Measured figures of the suite, printed at the end and written to ``.stack/node-report.json``."""

    values: dict[str, Any] = field(default_factory=dict)

    def record(self, name: str, value: Any) -> None:
        self.values[name] = round(value, 1) if isinstance(value, float) else value
