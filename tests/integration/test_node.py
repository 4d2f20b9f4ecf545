"""The stack's node runs real pods (issue 9): Ready, scheduling, bridge networking, a mounted Secret,
Vault / the STS emulator / the apiserver at VSO_NODE_HOST_IP, a ClusterIP Service through kube-proxy,
``kubectl logs`` and ``exec`` through the apiserver, nothing reachable beyond the stack's own ranges;
and the operator image, run as a kubelet runs it, starts (no passwd entry for its uid)."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack import consumers, netns
from devstack.env import StackEnv
from devstack.kubeconfig import write_cert_kubeconfig
from devstack.node import POD_IDENTITY_IP
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


# --- Pod Identity (issue 20): the agent's address, NodeRestriction, the consumer images -----------------------

# Runs in the pod: an HTTP GET to the agent's address, and the pod's routing table.
PI_PROBE = r"""
import json, os, socket
out = {"routes": open("/proc/net/route").read().splitlines()[1:]}
s = socket.create_connection((os.environ["PI_ADDRESS"], int(os.environ["PI_PORT"])), timeout=5)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
out["answer"] = s.recv(200).decode()
s.close()
print(json.dumps(out), flush=True)
"""
TEST_LINK = "vso-test-pi0"


def _route_hex(ip: str) -> str:
    """An IPv4 address as /proc/net/route prints it (little-endian hex)."""
    return "".join(f"{int(octet):02X}" for octet in reversed(ip.split(".")))


def _ip(*args: str, netns_name: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", netns_name] if netns_name else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


@contextlib.contextmanager
def _pod_identity_address(netns_name: str) -> Iterator[None]:
    """169.254.170.23 in the node's network namespace, as the agent's init container puts it there (a link of its
    own; this kernel may have no ``dummy`` driver, and a bridge without ports holds an address the same way).
    Left alone when the agent already put it there."""
    if POD_IDENTITY_IP in _ip("-o", "addr", "show", netns_name=netns_name).stdout:
        yield
        return
    if _ip("link", "add", TEST_LINK, "type", "dummy", netns_name=netns_name, check=False).returncode != 0:
        _ip("link", "add", TEST_LINK, "type", "bridge", netns_name=netns_name)
    try:
        _ip("addr", "add", f"{POD_IDENTITY_IP}/32", "dev", TEST_LINK, netns_name=netns_name)
        _ip("link", "set", TEST_LINK, "up", netns_name=netns_name)
        yield
    finally:
        _ip("link", "del", TEST_LINK, netns_name=netns_name, check=False)


def test_pods_reach_the_pod_identity_address_on_the_node_and_the_host_never_has_it(stack: StackEnv, ns: str) -> None:
    """docs/design/pod-identity.md 8.1: pods route 169.254.170.23/32 via the bridge address to the node, where the
    agent binds it; the address and every route to it stay inside the stack's network namespace."""
    image = _image(stack)
    name, host = stack.extra["VSO_NODE_NETNS"], stack.extra["VSO_NODE_HOST_IP"]
    peers: list[str] = []
    with _pod_identity_address(name):
        with netns.entered(name):  # the listening socket lives in the node's namespace
            server = socket.create_server((POD_IDENTITY_IP, 0))
        port = server.getsockname()[1]

        def serve() -> None:
            with server:
                server.settimeout(120)
                conn, peer = server.accept()
                with conn:
                    peers.append(peer[0])
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nthe node's agent address")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        # the host's own namespace: no address, no route (any table) for it
        assert POD_IDENTITY_IP not in _ip("-o", "addr", "show").stdout
        assert POD_IDENTITY_IP not in _ip("route", "show", "table", "all").stdout
        _apply(stack, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pi-probe", "namespace": ns},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
                "containers": [{
                    "name": "probe", "image": image, "imagePullPolicy": "Never",
                    "command": ["python3", "-c", PI_PROBE],
                    "env": [{"name": "PI_ADDRESS", "value": POD_IDENTITY_IP}, {"name": "PI_PORT", "value": str(port)}],
                }],
            },
        })
        phase = wait_for("the probe pod to finish", lambda: _pod_phase(stack, ns, "pi-probe") in ("Succeeded", "Failed")
                         and _pod_phase(stack, ns, "pi-probe"), timeout=120)
        thread.join(timeout=10)
    logs = kubectl(stack, "-n", ns, "logs", "pi-probe").stdout
    assert phase == "Succeeded", logs
    result = json.loads(logs.strip().splitlines()[-1])
    assert result["answer"].endswith("the node's agent address"), result
    pod_ip = json.loads(kubectl(stack, "-n", ns, "get", "pod", "pi-probe", "-o", "json").stdout)["status"]["podIP"]
    assert peers == [pod_ip]  # straight over the bridge: no NAT on the way
    # the pod's routes: its own range on-link, the Service range and the agent's /32 via the bridge address
    routes = {(f[1], f[2], f[7]) for f in (line.split() for line in result["routes"])}
    gateway = _route_hex(host)
    assert (_route_hex(POD_IDENTITY_IP), gateway, "FFFFFFFF") in routes, result["routes"]
    assert (_route_hex("10.96.0.0"), gateway, "0000FFFF") in routes, result["routes"]
    assert {dst for dst, _, _ in routes} == {_route_hex(x) for x in ("10.244.0.0", "10.96.0.0", POD_IDENTITY_IP)}


def _token_review(stack: StackEnv, token: str, audience: str) -> dict[str, Any]:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": token, "audiences": [audience]}}
    status: dict[str, Any] = json.loads(kubectl(stack, "create", "-o", "json", "-f", "-",
                                                stdin=json.dumps(review)).stdout)["status"]
    return status


def test_the_kubelet_is_a_node_and_may_request_tokens_only_for_its_own_pods(
        stack: StackEnv, ns: str, tmp_path: Path) -> None:
    """NodeRestriction (docs/design/pod-identity.md 4.1, 8.1): the kubelet authenticates as system:node:<name> in
    system:nodes and may mint only tokens bound to a pod on its node, for audiences that pod declares; a pod-bound
    token's review names the pod's node (ServiceAccountTokenPodNodeInfo)."""
    node_name = stack.extra["VSO_NODE_NAME"]
    other_node = f"vso-fake-{ns}"
    kubectl(stack, "-n", ns, "create", "serviceaccount", "app")
    pause = {"name": "c", "image": "vso.local/pause:3.10", "imagePullPolicy": "Never"}
    _apply(stack, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "own", "namespace": ns},
                   "spec": {"serviceAccountName": "app", "containers": [pause]}})
    # a Node object with no kubelet behind it, and a pod bound to it: the ServiceAccount is the same, so only
    # NodeRestriction (not the Node authorizer's graph) tells the two pods apart
    _apply(stack, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": other_node}})
    try:
        _apply(stack, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere", "namespace": ns},
                       "spec": {"serviceAccountName": "app", "nodeName": other_node, "containers": [pause]}})
        wait_for("the pod to be scheduled", lambda: kubectl(
            stack, "-n", ns, "get", "pod", "own", "-o", "jsonpath={.spec.nodeName}").stdout == node_name, timeout=60)
        uid = {p: kubectl(stack, "-n", ns, "get", "pod", p, "-o", "jsonpath={.metadata.uid}").stdout
               for p in ("own", "elsewhere")}

        # an admin's pod-bound token: the review names the pod and its node
        audience = "vaultsts.io/pod-identity"
        token = kubectl(stack, "-n", ns, "create", "token", "app", "--bound-object-kind", "Pod",
                        "--bound-object-name", "own", "--audience", audience).stdout.strip()
        review = _token_review(stack, token, audience)
        assert review["authenticated"] and review["audiences"] == [audience], review.get("error")
        extra = review["user"]["extra"]
        assert extra["authentication.kubernetes.io/node-name"] == [node_name]
        assert extra["authentication.kubernetes.io/pod-name"] == ["own"]
        assert extra["authentication.kubernetes.io/pod-uid"] == [uid["own"]]
        assert review["user"]["username"] == f"system:serviceaccount:{ns}:app"

        # the kubelet's own client certificate
        pki = stack.stack_dir / "pki"
        config = write_cert_kubeconfig(tmp_path / "kubelet.kubeconfig", stack.kube_api, stack.kube_ca,
                                       user_name=f"system:node:{node_name}", cert=pki / "kubelet.crt",
                                       key=pki / "kubelet.key")

        def as_kubelet(*args: str) -> subprocess.CompletedProcess[str]:
            return kubectl(stack, "--kubeconfig", str(config), *args, check=False)

        whoami = json.loads(as_kubelet("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
        assert whoami["username"] == f"system:node:{node_name}" and "system:nodes" in whoami["groups"]

        def kubelet_token(pod: str | None, *more: str) -> subprocess.CompletedProcess[str]:
            bound = ["--bound-object-kind", "Pod", "--bound-object-name", pod, "--bound-object-uid", uid[pod]] \
                if pod else []
            return as_kubelet("-n", ns, "create", "token", "app", *bound, *more)

        own = kubelet_token("own")
        assert own.returncode == 0 and own.stdout.count(".") == 2, own.stderr
        elsewhere = kubelet_token("elsewhere")
        assert "bound to a pod scheduled on a different node" in elsewhere.stderr, elsewhere
        unbound = kubelet_token(None)
        assert "not bound to a pod" in unbound.stderr, unbound
        undeclared = kubelet_token("own", "--audience", audience)  # the pod mounts no token of that audience
        assert "not authorized to request tokens for this audience" in undeclared.stderr, undeclared
    finally:
        kubectl(stack, "-n", ns, "delete", "pod", "elsewhere", "--wait=false", check=False)
        kubectl(stack, "delete", "node", other_node, "--wait=false", check=False)


def test_each_consumer_image_runs_on_the_node_with_its_sdks_default_chain(stack: StackEnv, ns: str) -> None:
    """devstack/consumers: Python (the operator image), Go and JavaScript each find credentials in their environment
    through their SDK's default chain and call the emulator's GetCallerIdentity; without credentials each prints
    an ok:false line and goes on."""
    images = consumers.build_all(stack)
    assert set(images) == set(consumers.SDKS)
    issued = _emulator_credentials(stack, ns)
    user, account = f"consumer-{ns}", "123456789012"
    kubectl(stack, "-n", ns, "create", "secret", "generic", "aws",
            f"--from-literal=AWS_ACCESS_KEY_ID={issued['AccessKeyId']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={issued['SecretAccessKey']}",
            f"--from-literal=AWS_SESSION_TOKEN={issued['SessionToken']}")
    endpoint = stack.extra["VSO_NODE_STS_ENDPOINT"]
    for sdk, image in images.items():
        for name, with_credentials in ((f"{sdk}-creds", True), (f"{sdk}-none", False)):
            container = consumers.container(sdk, image, sts_endpoint=endpoint, interval=1)
            if with_credentials:
                container["envFrom"] = [{"secretRef": {"name": "aws"}}]
            _apply(stack, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                           "spec": {"containers": [container], "terminationGracePeriodSeconds": 2}})

    for sdk in images:
        good = wait_for(f"the {sdk} consumer's first line", lambda s=sdk: _json_lines(stack, ns, f"{s}-creds"),
                        timeout=120)
        assert good[0] == {"sdk": sdk, "ok": True, "arn": f"arn:aws:sts::{account}:assumed-role/{user}/consumer",
                           "access_key_id": issued["AccessKeyId"], "t": good[0]["t"]}, good[0]
        assert abs(good[0]["t"] - time.time()) < 120
        bad = wait_for(f"the {sdk} consumer's line without credentials",
                       lambda s=sdk: _json_lines(stack, ns, f"{s}-none"), timeout=120)
        assert bad[0]["sdk"] == sdk and bad[0]["ok"] is False and bad[0]["error"], bad[0]
        assert issued["SecretAccessKey"] not in json.dumps(good + bad)


def test_each_consumer_takes_container_credentials_from_the_agent_address(stack: StackEnv, ns: str) -> None:
    """The whole pod side of Pod Identity with a stand-in agent: each SDK's default chain reads
    AWS_CONTAINER_CREDENTIALS_FULL_URI (169.254.170.23, a port of the test's own so a real agent on :80 is left
    alone) with its projected token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, over the pods' route to the node,
    and calls STS with what it got; the token it presents names the pod's node."""
    images = consumers.build_all(stack)
    issued = _emulator_credentials(stack, ns)
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    expiration = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = json.dumps({"AccessKeyId": issued["AccessKeyId"], "SecretAccessKey": issued["SecretAccessKey"],
                         "Token": issued["SessionToken"], "Expiration": expiration, "AccountId": "123456789012"})
    tokens: list[str] = []

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tokens.append(self.headers.get("Authorization", ""))
            body = answer.encode() if self.path == "/v1/credentials" else b"{}"
            self.send_response(200 if self.path == "/v1/credentials" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    name = stack.extra["VSO_NODE_NETNS"]
    kubectl(stack, "-n", ns, "create", "serviceaccount", "app")
    with _pod_identity_address(name):
        with netns.entered(name):
            server = http.server.ThreadingHTTPServer((POD_IDENTITY_IP, 0), Agent)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI":
                   f"http://{POD_IDENTITY_IP}:{server.server_address[1]}/v1/credentials",
                   "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/run/secrets/vaultsts.io/token"}
            for sdk, image in images.items():
                container = consumers.container(sdk, image, sts_endpoint=stack.extra["VSO_NODE_STS_ENDPOINT"],
                                                interval=1, env=env)
                container["volumeMounts"] = [{"name": "token", "mountPath": "/var/run/secrets/vaultsts.io"}]
                _apply(stack, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": sdk, "namespace": ns},
                               "spec": {"serviceAccountName": "app", "containers": [container],
                                        "terminationGracePeriodSeconds": 2,
                                        "volumes": [{"name": "token", "projected": {"sources": [
                                            {"serviceAccountToken": {"audience": "vaultsts.io/pod-identity",
                                                                     "expirationSeconds": 600, "path": "token"}}]}}]}})
            for sdk in images:
                first = wait_for(f"the {sdk} consumer's first line", lambda s=sdk: _json_lines(stack, ns, s),
                                 timeout=120)[0]
                assert first["ok"] is True, first
                assert first["access_key_id"] == issued["AccessKeyId"], first
                # each SDK's own format; Go's cache reports the expiry less its 5-minute refresh window
                seen = dt.datetime.fromisoformat(first["expiration"])
                assert dt.timedelta(0) <= expires - seen <= dt.timedelta(minutes=5, seconds=1), first
        finally:
            server.shutdown()
            server.server_close()
    assert tokens and all(t.count(".") == 2 for t in tokens), "every request carried a JWT"
    review = _token_review(stack, tokens[0], "vaultsts.io/pod-identity")
    assert review["authenticated"], review.get("error")
    assert review["user"]["extra"]["authentication.kubernetes.io/node-name"] == [stack.extra["VSO_NODE_NAME"]]


def _json_lines(stack: StackEnv, ns: str, pod: str) -> list[dict[str, Any]]:
    out = kubectl(stack, "-n", ns, "logs", pod, check=False).stdout
    return [json.loads(raw) for raw in out.splitlines() if raw.startswith("{")]


def _emulator_credentials(stack: StackEnv, ns: str) -> dict[str, Any]:
    """AssumeRole credentials the stack's emulator issued for a user and role of this test's own."""
    emulator = stack.emulator()
    user, account = f"consumer-{ns}", "123456789012"
    emulator.create_user(user, account=account)
    key = emulator.create_access_key(user)
    role = f"arn:aws:iam::{account}:role/{user}"
    emulator.create_role(role, [f"arn:aws:iam::{account}:user/{user}"])
    sts = boto3.client("sts", endpoint_url=stack.sts_endpoint, region_name=consumers.DEFAULT_REGION,
                       aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    credentials: dict[str, Any] = sts.assume_role(RoleArn=role, RoleSessionName="consumer",
                                                  DurationSeconds=900)["Credentials"]
    return credentials
