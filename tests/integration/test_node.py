"""The stack's node runs real pods (issue 9): Ready, scheduling, bridge networking, a mounted Secret,
Vault / the STS emulator / the apiserver at VSO_NODE_HOST_IP, a ClusterIP Service through kube-proxy,
``kubectl logs`` and ``exec`` through the apiserver, nothing reachable beyond the stack's own ranges;
and the operator image, run as a kubelet runs it, starts (no passwd entry for its uid)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from devstack.env import StackEnv
from tests.e2e.helpers import kubectl, wait_for

pytestmark = pytest.mark.stack

# Runs in the pod (the operator image has python3): every check prints one JSON line.
PROBE = r"""
import json, os, socket, ssl, sys, urllib.request
host = os.environ["NODE_HOST_IP"]
out = {}
out["secret"] = open("/creds/key").read()
def get(url, ctx=None, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return [r.status, r.read().decode()[:200]]
    except urllib.error.HTTPError as e:
        return [e.code, ""]
    except Exception as e:
        return ["error", type(e).__name__ + ": " + str(e)[:200]]
# The stack's Vault speaks TLS only; this checks the path, not trust (tests/node's operator pods trust its CA).
out["vault"] = get(f"https://{host}:{os.environ['BAO_PORT']}/v1/sys/health", ssl._create_unverified_context())
out["emulator"] = get(f"http://{host}:{os.environ['EMULATOR_PORT']}/_emulator/health")
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
auth = {"Authorization": "Bearer " + open(f"{sa}/token").read()}
svc = os.environ["KUBERNETES_SERVICE_HOST"] + ":" + os.environ["KUBERNETES_SERVICE_PORT"]
out["apiserver_service"] = get(f"https://{svc}/version", ctx, auth)
out["apiserver_direct"] = get(f"https://{host}:{os.environ['API_PORT']}/version", ctx, auth)
# kube-proxy programs a new Service a sync period after its EndpointSlice: a client sees the ClusterIP
# refused until then (the stack's CI saw ENETUNREACH once, on a busy 2-core machine). Wait for it as a
# client would, up to 30 s, and report the last answer.
import time
deadline = time.monotonic() + 30
while True:
    out["cluster_ip"] = get(f"http://{os.environ['ECHO_IP']}:80/")
    if out["cluster_ip"][0] == 200 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
def connect(addr):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect(addr); return "connected"
    except OSError as e:
        return type(e).__name__ + ": " + str(e)
    finally:
        s.close()
out["outside"] = connect(("1.1.1.1", 443))
out["private_outside"] = connect(("192.168.1.1", 80))
try:
    socket.getaddrinfo("pypi.org", 443); out["dns"] = "resolved"
except OSError as e:
    out["dns"] = type(e).__name__
out["routes"] = open("/proc/net/route").read().splitlines()[1:]
print(json.dumps(out), flush=True)
"""


def _image(stack: StackEnv) -> str:
    image = stack.extra.get("VSO_IMAGE")
    assert image, "VSO_IMAGE is not set: run `make image` (it builds the operator image and loads it into the node)"
    return image


@pytest.fixture()
def ns(stack: StackEnv) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:6]}"
    kubectl(stack, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(stack, "delete", "namespace", name, "--wait=false", check=False)


def _apply(stack: StackEnv, manifest: dict[str, object]) -> None:
    kubectl(stack, "apply", "-f", "-", stdin=json.dumps(manifest))


def _pod_phase(stack: StackEnv, ns: str, name: str) -> str:
    out = kubectl(stack, "-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)
    return out.stdout.strip()


def test_node_is_ready_and_addresses_are_in_the_namespace(stack: StackEnv) -> None:
    node = json.loads(kubectl(stack, "get", "node", stack.extra["VSO_NODE_NAME"], "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert not node["spec"].get("taints")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == stack.extra["VSO_NODE_HOST_IP"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.4"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    # the `kubernetes` Service's endpoint is the address pods reach (lease endpoint reconciler)
    slices = json.loads(kubectl(stack, "-n", "default", "get", "endpointslices",
                                "-l", "kubernetes.io/service-name=kubernetes", "-o", "json").stdout)
    endpoints = [a for s in slices["items"] for e in s["endpoints"] for a in e["addresses"]]
    assert endpoints == [stack.extra["VSO_NODE_HOST_IP"]]


def test_pod_on_the_bridge_reads_a_secret_and_reaches_the_stack_and_nothing_else(stack: StackEnv, ns: str) -> None:
    image = _image(stack)
    host = stack.extra["VSO_NODE_HOST_IP"]
    kubectl(stack, "-n", ns, "create", "secret", "generic", "creds", "--from-literal=key=s3cr3t-value")
    labels = {"app": "echo"}
    _apply(stack, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo", "namespace": ns, "labels": labels},
        "spec": {
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
            "containers": [{
                "name": "echo", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-m", "http.server", "8080", "--directory", "/opt/venv"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }],
        },
    })
    _apply(stack, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": ns},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    cluster_ip = kubectl(stack, "-n", ns, "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    wait_for("the echo pod to be Ready", lambda: kubectl(
        stack, "-n", ns, "get", "pod", "echo", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        check=False).stdout.strip() == "True", timeout=90)
    env = {
        "NODE_HOST_IP": host,
        "BAO_PORT": stack.vault_addr.rsplit(":", 1)[1],
        "EMULATOR_PORT": stack.sts_endpoint.rsplit(":", 1)[1],
        "API_PORT": stack.kube_api.rsplit(":", 1)[1],
        "ECHO_IP": cluster_ip,
    }
    _apply(stack, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", PROBE],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "volumeMounts": [{"name": "creds", "mountPath": "/creds", "readOnly": True}],
            }],
            "volumes": [{"name": "creds", "secret": {"secretName": "creds"}}],
        },
    })
    phase = wait_for("the probe pod to finish", lambda: _pod_phase(stack, ns, "probe") in ("Succeeded", "Failed")
                     and _pod_phase(stack, ns, "probe"), timeout=120)
    logs = kubectl(stack, "-n", ns, "logs", "probe").stdout  # apiserver -> kubelet through the egress proxy
    assert phase == "Succeeded", logs
    result = json.loads(logs.strip().splitlines()[-1])
    pod = json.loads(kubectl(stack, "-n", ns, "get", "pod", "probe", "-o", "json").stdout)
    assert pod["status"]["podIP"].startswith(stack.extra["VSO_POD_CIDR"].rsplit(".", 2)[0]), pod["status"]
    assert result["secret"] == "s3cr3t-value"
    assert result["vault"][0] == 200, result["vault"]
    assert result["emulator"][0] == 200, result["emulator"]
    assert result["apiserver_service"][0] == 200 and "v1.35.4" in result["apiserver_service"][1], result
    assert result["apiserver_direct"][0] == 200, result["apiserver_direct"]
    assert result["cluster_ip"][0] == 200 and "bin" in result["cluster_ip"][1], result["cluster_ip"]
    # nothing beyond the stack's ranges: no default route, no resolver
    assert "Network is unreachable" in result["outside"], result["outside"]
    assert "Network is unreachable" in result["private_outside"], result["private_outside"]
    assert result["dns"] == "gaierror", result["dns"]
    destinations = {line.split()[1] for line in result["routes"]}
    assert "00000000" not in destinations, result["routes"]  # /proc/net/route: 0.0.0.0 = default

    # exec through the apiserver and kubelet streaming
    exec_out = kubectl(stack, "-n", ns, "exec", "echo", "--", "python3", "-c", "import os; print(os.getuid())")
    assert exec_out.stdout.strip() == "65532"


def test_image_runs_as_a_kubelet_runs_it(stack: StackEnv, ns: str, crds: None) -> None:
    """Issue 9: uid 65532 has no passwd entry in the image, and kopf's detect_own_id called
    getpass.getuser() unless POD_ID was set: the default install died with KeyError at start. kopf is
    retired (issue 18); the operator names itself <hostname>-<pid>: as a kubelet runs it, with no POD_ID,
    it starts under that name, and its supervised tasks run without a failure."""
    image = _image(stack)
    kubectl(stack, "-n", ns, "create", "serviceaccount", "operator")
    binding = f"{ns}-operator"
    kubectl(stack, "create", "clusterrolebinding", binding, "--clusterrole=cluster-admin",
            f"--serviceaccount={ns}:operator")
    try:
        pod_security = {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True}
        _apply(stack, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "getuser", "namespace": ns},
            "spec": {"restartPolicy": "Never", "securityContext": pod_security, "containers": [{
                "name": "getuser", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", "import getpass; getpass.getuser()"]}]},
        })
        _apply(stack, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator", "namespace": ns},
            "spec": {"serviceAccountName": "operator", "securityContext": pod_security, "containers": [{
                "name": "operator", "image": image, "imagePullPolicy": "Never",
                # the image's entrypoint; no POD_ID in the environment, as the chart had it
                "args": ["run", "--namespace", ns, "--liveness=", "--metrics-port=0", "--verbose"],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                "volumes": [{"name": "tmp", "emptyDir": {}}]},
        })
        wait_for("the getuser pod to finish", lambda: _pod_phase(stack, ns, "getuser") in ("Succeeded", "Failed"),
                 timeout=90)
        # the precondition really holds: no passwd entry for the image's uid, as a kubelet runs it
        assert _pod_phase(stack, ns, "getuser") == "Failed"
        assert "getpwuid(): uid not found: 65532" in kubectl(stack, "-n", ns, "logs", "getuser").stdout

        def started() -> bool:
            out = kubectl(stack, "-n", ns, "logs", "operator", check=False).stdout
            return "getpwuid" in out or "vault-sts-operator started (instance " in out

        wait_for("the operator to start (or crash)", started, timeout=90)
        time.sleep(3)
        logs = kubectl(stack, "-n", ns, "logs", "operator").stdout
        pod = json.loads(kubectl(stack, "-n", ns, "get", "pod", "operator", "-o", "json").stdout)
        status = pod["status"]["containerStatuses"][0]
        assert "getpwuid" not in logs and "KeyError" not in logs, logs[-2000:]
        assert "vault-sts-operator started (instance operator-" in logs, logs[-2000:]  # the pod's name, then its pid
        assert "failed; restarting it" not in logs and "Traceback" not in logs, logs[-2000:]
        assert status["restartCount"] == 0 and "running" in status["state"], (status, logs[-2000:])
    finally:
        kubectl(stack, "delete", "clusterrolebinding", binding, check=False)
