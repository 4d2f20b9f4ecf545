"""The operator and its consumers as pods on the stack's node: Helm values for the real image, manifests for
pods that run the AWS SDK with a credential's Secret, and waiting on pods. Used by tests/node and the demo.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from devstack.env import StackEnv
from devstack.layout import REPO_ROOT

CHART = REPO_ROOT / "charts" / "vault-sts-operator"
RESTART_OPT_IN = "vaultsts.io/restart-on-rotation"  # the workload names the credential whose rotation restarts it

# Runs inside a pod, with the image's Python and boto3: GetCallerIdentity through the STS endpoint every
# INTERVAL seconds, printing the assumed-role ARN and the access key id it used (the public half only).
# One boto3 session for the pod's whole life: a rotation reaches it only the way it reaches a real SDK.
CONSUMER_PY = """\
import json, os, signal, sys, time
import boto3
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
session = boto3.session.Session(region_name="us-east-1")
sts = session.client("sts", endpoint_url=os.environ["STS_ENDPOINT"])
while True:
    try:
        arn = sts.get_caller_identity()["Arn"]
        key = session.get_credentials().get_frozen_credentials().access_key
        print(json.dumps({"t": round(time.time(), 3), "arn": arn, "key": key}), flush=True)
    except Exception as exc:
        print(json.dumps({"t": round(time.time(), 3), "error": type(exc).__name__}), flush=True)
    time.sleep(float(os.environ.get("INTERVAL", "1")))
"""

# credential_process: the SDK runs it again whenever the credentials are inside its refresh window
# (botocore: 15 minutes before expiry), so a 900 s credential is re-read from the mounted Secret on every call.
AWS_CONFIG = """\
[default]
region = us-east-1
credential_process = cat /aws/credential_process.json
"""

SLEEPER_PY = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\ntime.sleep(10**9)\n"


@dataclass(frozen=True)
class Node:
    """What the stack's node offers: the address pods reach the stack on, and the operator image."""

    host_ip: str
    image: str
    vault_addr: str  # the stack's Vault, as pods reach it (TLS: its certificate names the node's host IP)
    sts_endpoint: str  # the stack's STS emulator, as pods reach it
    vault_ca: str = ""  # the PEM file of the CA that signed the Vault's certificate

    @classmethod
    def from_stack(cls, stack: StackEnv) -> Node:
        host_ip, image = stack.extra.get("VSO_NODE_HOST_IP", ""), stack.extra.get("VSO_IMAGE", "")
        missing = [k for k, v in (("VSO_NODE_HOST_IP", host_ip), ("VSO_IMAGE", image)) if not v]
        if missing:
            raise RuntimeError(f".stack/env exports no {', '.join(missing)}: the stack has no node, or the "
                               "image was not built and loaded (`make image`)")
        return cls(host_ip=host_ip, image=image,
                   vault_addr=stack.extra.get("VSO_NODE_VAULT_ADDR") or _rehost(stack.vault_addr, host_ip),
                   sts_endpoint=stack.extra.get("VSO_NODE_STS_ENDPOINT") or _rehost(stack.sts_endpoint, host_ip),
                   vault_ca=str(stack.vault_ca) if stack.vault_ca is not None else "")

    @property
    def repository(self) -> str:
        return split_image(self.image)[0]

    @property
    def tag(self) -> str:
        return split_image(self.image)[1]


def _rehost(url: str, host: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{host}:{parts.port}{parts.path}".rstrip("/")


def split_image(ref: str) -> tuple[str, str]:
    """``registry/repo:tag`` -> (``registry/repo``, ``tag``); a port in the registry is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def helm(stack: StackEnv, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    binary = stack.extra.get("VSO_HELM")
    if not binary:
        raise RuntimeError("helm is not built (devstack/build.sh helm)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False,
                            env=stack.subprocess_env(), timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def release_values(node: Node, *, lease: str, extra: tuple[str, ...] = ()) -> list[str]:
    """``--set`` arguments: the node's image (never pulled), 2 replicas electing a leader on Lease ``lease``,
    Vault as pods reach it.

    The CRDs come from ``kubectl apply -f crds/`` (the suites share them; tests/chart covers the chart's
    own CRD templates); the STS emulator speaks plain HTTP, so the development setting is on."""
    sets = [f"image.repository={node.repository}", f"image.tag={node.tag}", "image.pullPolicy=Never",
            "replicaCount=2", "leaderElection.enabled=true", f"leaderElection.leaseName={lease}",
            f"vault.address={node.vault_addr}",
            "crds.enabled=false", "allowInsecureHttp=true",
            # the STS emulator is the one STS endpoint the platform allows here (no AWS endpoint is reachable)
            f"allowedDestinations.stsEndpoints[0]={node.sts_endpoint}",
            # the suites rotate back to back (a burst within the restart debounce): users keep the 60 s default
            "extraArgs[0]=--rotate-min-interval=2", *extra]
    args = [arg for value in sets for arg in ("--set", value)]
    if node.vault_ca:
        args += ["--set-file", f"vault.caBundle={node.vault_ca}"]
    return args


# --- pods ------------------------------------------------------------------------------------------------


def operator_selector(release: str) -> str:
    """The release's operator pods (not its Pod Identity agents, which share the instance label)."""
    return f"app.kubernetes.io/instance={release},app.kubernetes.io/component!=pod-identity-agent"


def operator_pods(core: Any, namespace: str, release: str) -> list[Any]:
    """The release's pods that are not being deleted (``core``: a ``kubernetes.client.CoreV1Api``)."""
    pods = core.list_namespaced_pod(namespace, label_selector=operator_selector(release)).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or ()))


def wait_release_ready(core: Any, namespace: str, release: str, replicas: int = 2, timeout: float = 240.0,
                       exclude: set[str] | None = None) -> list[Any]:
    """Wait for ``replicas`` Ready pods of the release (and none of ``exclude`` left); raise with their state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        every = core.list_namespaced_pod(namespace, label_selector=operator_selector(release)).items
        pods = [p for p in every if p.metadata.deletion_timestamp is None]
        stale = exclude and any(p.metadata.name in exclude for p in every)
        if not stale and len(pods) == replicas and all(pod_ready(p) for p in pods):
            return pods
        time.sleep(0.5)
    raise RuntimeError(f"no {replicas} Ready pods of release {release} after {timeout:.0f}s\n"
                       f"{describe_pods(core, namespace)}")


def describe_pods(core: Any, namespace: str) -> str:
    lines = []
    for pod in core.list_namespaced_pod(namespace).items:
        statuses = [(s.name, s.ready, s.restart_count, s.state.waiting.reason if s.state.waiting else "")
                    for s in (pod.status.container_statuses or ())]
        lines.append(f"--- pod {pod.metadata.name}: {pod.status.phase} {statuses}")
        lines.append(pod_log(core, namespace, pod.metadata.name, tail=30))
    for event in core.list_namespaced_event(namespace).items[-20:]:
        lines.append(f"event {event.involved_object.kind}/{event.involved_object.name}: {event.reason} "
                     f"{event.message}")
    return "\n".join(lines)


def pod_log(core: Any, namespace: str, name: str, tail: int | None = None) -> str:
    from kubernetes.client.exceptions import ApiException

    try:
        kwargs: dict[str, Any] = {"tail_lines": tail} if tail else {}
        return str(core.read_namespaced_pod_log(name, namespace, **kwargs))
    except ApiException as exc:
        return f"(no log: HTTP {exc.status} {exc.reason})"


def consumer_lines(core: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    """The JSON lines a consumer pod printed so far (``kubectl logs``)."""
    out = []
    for raw in pod_log(core, namespace, name).splitlines():
        if raw.startswith("{"):
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out


# --- manifests -------------------------------------------------------------------------------------------


def consumer_config_map(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "consumer", "namespace": namespace},
            "data": {"consumer.py": CONSUMER_PY, "config": AWS_CONFIG}}


def _restricted() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def consumer_pod(node: Node, namespace: str, name: str, secret: str, how: str, interval: float = 1.0
                 ) -> dict[str, Any]:
    """A pod running the AWS SDK with the Secret, consumed ``how``:

    - ``env``: ``envFrom`` the Secret (AWS_ACCESS_KEY_ID, ...);
    - ``credentials``: the Secret mounted at /aws, ``AWS_SHARED_CREDENTIALS_FILE=/aws/credentials``;
    - ``process``: the Secret mounted at /aws, ``AWS_CONFIG_FILE`` naming a config whose
      ``credential_process`` is ``cat /aws/credential_process.json``.
    """
    env: list[dict[str, Any]] = [{"name": "STS_ENDPOINT", "value": node.sts_endpoint},
                                 {"name": "INTERVAL", "value": str(interval)},
                                 {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}]
    mounts = [{"name": "code", "mountPath": "/consumer", "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "code", "configMap": {"name": "consumer"}}]
    container: dict[str, Any] = {"name": "app", "image": node.image, "imagePullPolicy": "Never",
                                 "command": ["python", "/consumer/consumer.py"], "env": env, "volumeMounts": mounts,
                                 "securityContext": _restricted(),
                                 "resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                                               "limits": {"memory": "128Mi"}}}
    if how == "env":
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    elif how in ("credentials", "process"):
        mounts.append({"name": "aws", "mountPath": "/aws", "readOnly": True})
        volumes.append({"name": "aws", "secret": {"secretName": secret}})
        if how == "credentials":
            env += [{"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/aws/credentials"},
                    {"name": "AWS_CONFIG_FILE", "value": "/nonexistent"}]
        else:
            env += [{"name": "AWS_CONFIG_FILE", "value": "/consumer/config"},
                    {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/nonexistent"}]
    else:
        raise ValueError(f"unknown way to consume a Secret: {how}")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 2,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532}}}


def workload(node: Node, kind: str, name: str, credential: str) -> dict[str, Any]:
    """A Deployment, StatefulSet or DaemonSet whose pods sleep, opted in to restarts on ``credential``'s
    rotation (the CR's rolloutRestartTargets names the workload; the workload's annotation names the CR)."""
    labels = {"app": name}
    pod_spec = {"terminationGracePeriodSeconds": 1, "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                "containers": [{"name": "app", "image": node.image, "imagePullPolicy": "Never",
                                "command": ["python", "-c", SLEEPER_PY], "securityContext": _restricted(),
                                "resources": {"requests": {"cpu": "5m", "memory": "32Mi"},
                                              "limits": {"memory": "64Mi"}}}]}
    spec: dict[str, Any] = {"selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels}, "spec": pod_spec}}
    if kind in ("Deployment", "StatefulSet"):
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
        spec["podManagementPolicy"] = "Parallel"
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "annotations": {RESTART_OPT_IN: credential}}, "spec": spec}
