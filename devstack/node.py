"""One real node in the local stack: containerd + runc + CNI bridge, kubelet, kube-proxy, kube-scheduler.

Topology (docs/local-node.md has the picture and the reasons):

* ``vso-node-<offset>``, a network namespace the stack creates (``devstack/netns.py``), holds the
  node's whole network: the bridge with ``VSO_NODE_HOST_IP``, every pod, kube-proxy's nftables rules.
  No interface leads out of it and pods have no default route.
* ``netns-forward`` (``devstack/netns_forward.py``) listens at ``VSO_NODE_HOST_IP`` on the apiserver's,
  OpenBao's and the STS emulator's ports and relays to ``127.0.0.1`` on the host; kube-apiserver
  reaches the kubelet through its HTTP CONNECT unix socket (egress selector ``cluster``).
* ``node`` (``devstack/node_init.py``) is pid 1 of a pid namespace, in a private mount namespace,
  inside the network namespace: containerd, the kubelet and kube-proxy run under it; killing it
  kills every shim and container.
* kube-scheduler runs on the host's loopback like kube-controller-manager.

``stack down`` stops those processes, deletes the namespace and removes the node's cgroups; state
lives under ``.stack/data/node`` (deleted too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack import health, netns, pause, procs
from devstack.handle import Stack
from devstack.kubeconfig import write_cert_kubeconfig
from devstack.layout import Layout, Ports
from devstack.pki import NODE_NAME, Pki
from devstack.procs import StackError

SERVICE_CIDR = netns.SERVICE_CIDR
# The Pod Identity agent's address (EKS's, which every AWS SDK accepts over plain HTTP): the agent binds it
# on a dummy link of its own inside the node's network namespace, so a pod's route to it ends at the node
# (via the bridge address) and the address never exists outside the stack's namespaces.
POD_IDENTITY_IP = "169.254.170.23"
POD_IDENTITY_ROUTE = f"{POD_IDENTITY_IP}/32"
KUBELET_PORT = 10250
RUNC = "/usr/sbin/runc"
# Paths as the node's processes see them (its /run and /var/lib are the stack's, see node_init):
# short, because a unix socket path holds at most 107 bytes and the stack's directory may be deep.
IN_NODE_SOCKET = "/run/containerd/containerd.sock"
IN_NODE_KUBELET_ROOT = "/var/lib/kubelet"
UNIX_PATH_MAX = 107
CONTAINERD_TMPFS = "3g"
CGROUP_PREFIX = "vso-node-"  # the operator image unpacked and stored once is about 0.7 GB
CNI_BIN = "/usr/lib/cni"
# kube-controller-manager controllers a node needs (the not-ready taint, Service endpoints) and those
# that make workloads of every kind run on it.
NODE_CONTROLLERS = (
    "node-lifecycle-controller",
    "endpointslice-controller",
    "endpoints-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "pod-garbage-collector-controller",
    "ttl-controller",
)


def enabled() -> bool:
    """The node is on unless ``VSO_STACK_NODE=0`` (a machine without root or containerd)."""
    return os.environ.get("VSO_STACK_NODE", "1") != "0"


def offset_of(ports: Ports) -> int:
    return ports.apiserver - Ports().apiserver


@dataclass(frozen=True)
class NodePaths:
    root: Path  # .stack/data/node: deleted by `down`

    @classmethod
    def of(cls, layout: Layout) -> NodePaths:
        return cls(layout.data / "node")

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def containerd_socket(self) -> Path:
        """The host's view of ``IN_NODE_SOCKET`` (``/run`` inside the node is this ``run``)."""
        return self.run / "containerd" / "containerd.sock"

    @property
    def egress_socket(self) -> Path:
        return self.root / "egress.sock"

    @property
    def kubelet_root(self) -> Path:
        """The host's view of the kubelet's ``/var/lib/kubelet`` (the overlay's upper layer)."""
        return self.root / "var-lib" / "upper" / "kubelet"

    @property
    def cni_conf(self) -> Path:
        return self.etc / "cni"

    @property
    def image_ref_file(self) -> Path:
        return self.root / "image-ref"


def missing_binaries(stack: Stack) -> list[str]:
    kube = stack.binaries.kube_apiserver.parent
    need = [kube / "kubelet", kube / "kube-proxy", kube / "kube-scheduler"]
    out = [str(p) for p in need if not os.access(p, os.X_OK)]
    for tool in ("containerd", "ctr", "ip", "nft", "unshare", "gcc"):
        if not _which(tool):
            out.append(tool)
    out += [p for p in (RUNC, f"{CNI_BIN}/bridge", f"{CNI_BIN}/host-local", f"{CNI_BIN}/loopback")
            if not os.access(p, os.X_OK)]
    return out


def _which(tool: str) -> str | None:
    import shutil

    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def netns_name(stack: Stack) -> str:
    return netns.name_for(offset_of(stack.ports))


# --------------------------------------------------------------------------- network + forwarder


def start_network(stack: Stack) -> None:
    """Create the namespace and start the forwarder (before kube-apiserver: it dials kubelets via it)."""
    if os.geteuid() != 0:
        raise StackError("the node needs root (network namespace, mounts, cgroups): run as root, or set "
                         "VSO_STACK_NODE=0 for a stack without a node")
    missing = missing_binaries(stack)
    if missing:
        raise StackError(
            "the node needs its system packages (`bash scripts/system-deps.sh test` installs them as root, or "
            "prints the apt-get command) and `make build` for kubelet/kube-proxy/kube-scheduler, or set "
            "VSO_STACK_NODE=0: missing " + ", ".join(missing)
        )
    paths = NodePaths.of(stack.layout)
    paths.root.mkdir(parents=True, exist_ok=True)
    if len(str(paths.egress_socket)) > UNIX_PATH_MAX:
        raise StackError(f"{paths.egress_socket}: longer than a unix socket path may be ({UNIX_PATH_MAX} bytes); "
                         "use a shorter VSO_STACK_DIR")
    name = netns_name(stack)
    netns.create(name)
    p = stack.ports
    procs.start(
        stack.layout,
        "netns-forward",
        [
            sys.executable, "-m", "devstack.netns_forward",
            "--netns", name,
            "--address", netns.NODE_HOST_IP,
            "--port", str(p.apiserver), "--port", str(p.bao), "--port", str(p.emulator),
            "--connect-socket", str(paths.egress_socket),
            "--allow", netns.POD_CIDR,
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    procs.wait_for(stack.layout, "netns-forward", "listening", paths.egress_socket.exists, timeout=15)


def apiserver_args(stack: Stack, pki: Pki) -> list[str]:
    """kube-apiserver flags for a node: advertise the address pods reach, dial kubelets by IP through
    the forwarder's CONNECT socket, authenticate to them with a client certificate."""
    paths = NodePaths.of(stack.layout)
    egress = paths.etc / "egress-selector.yaml"
    _write_yaml(egress, {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [{
            "name": "cluster",
            "connection": {"proxyProtocol": "HTTPConnect", "transport": {"uds": {"udsName": str(paths.egress_socket)}}},
        }],
    })
    return [
        f"--advertise-address={netns.NODE_HOST_IP}",
        "--endpoint-reconciler-type=lease",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki.kubelet_client.cert}",
        f"--kubelet-client-key={pki.kubelet_client.key}",
        f"--egress-selector-config-file={egress}",
    ]


# --------------------------------------------------------------------------- scheduler + node


def start_scheduler(stack: Stack, pki: Pki) -> None:
    kubeconfig = stack.layout.root / "kube-scheduler.kubeconfig"
    write_cert_kubeconfig(kubeconfig, stack.kube_api, pki.ca.cert, user_name="kube-scheduler",
                          cert=pki.scheduler.cert, key=pki.scheduler.key)
    procs.start(stack.layout, "kube-scheduler", [
        stack.binaries.kube_apiserver.parent / "kube-scheduler",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={stack.ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
    ])


def scheduler_healthy(stack: Stack) -> bool:
    return health.http_get(f"https://127.0.0.1:{stack.ports.scheduler}/healthz", health.insecure_tls())[0] == 200


def start_node(stack: Stack, pki: Pki) -> None:
    paths = NodePaths.of(stack.layout)
    spec = _write_configs(stack, pki, paths)
    # not `ip netns exec`: it remounts /sys and so hides the cgroup mounts the kubelet needs;
    # node_init enters the namespace itself
    procs.start(stack.layout, "node", [
        _which("unshare") or "unshare",
        "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc",
        sys.executable, "-m", "devstack.node_init", str(spec),
    ], cwd=Path(__file__).resolve().parent.parent)


def node_ready(stack: Stack, pki: Pki) -> bool:
    """The Node is Ready and carries no NoSchedule/NoExecute taint (pods can land on it)."""
    status, body = health.http_get(f"{stack.kube_api}/api/v1/nodes/{NODE_NAME}", health.admin_tls(pki))
    if status != 200:
        return False
    node = json.loads(body)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
    return ready and not node.get("spec", {}).get("taints")


def _cgroup_root(stack: Stack) -> str:
    """The node's own cgroup tree, one per stack (two kubelets must not share ``/kubepods``), beside
    (never inside) whatever cgroups the machine's own tooling keeps."""
    return f"/{CGROUP_PREFIX}{offset_of(stack.ports)}"


def _cgroup_hierarchies() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return [d for d in sorted(base.iterdir()) if d.is_dir() and d.name != "unified" and (d / "cgroup.procs").exists()]


def _create_cgroups(stack: Stack, root: str) -> None:
    """Create the node's cgroup tree in every hierarchy and record it, whether made now or left by a stack of the
    same offset that was killed before its teardown (a CI run recorded ``[]`` when only the newly made ones
    were listed): the record is the node's cgroups, which ``cleanup`` removes."""
    used: list[str] = []
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy
        for part in root.strip("/").split("/"):
            parent, path = path, path / part
            if not path.exists():
                path.mkdir()
                if hierarchy.name == "cpuset":  # a new v1 cpuset starts empty: inherit the parent's
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (path / knob).write_text((parent / knob).read_text())
            used.append(str(path))
    record = _cgroup_record(stack.layout)
    previous = json.loads(record.read_text()) if record.is_file() else []
    record.write_text(json.dumps(previous + [p for p in used if p not in previous]))


def _cgroup_record(layout: Layout) -> Path:
    return layout.root / "node-cgroups.json"


def _write_yaml(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def cni_config(paths: NodePaths) -> dict[str, object]:
    """Pods: an address on the bridge, routes to the pod range (on-link), the Service range and the Pod
    Identity agent's address (via the bridge address), nothing else."""
    return {
        "cniVersion": "0.4.0",
        "name": "vso",
        "plugins": [{
            "type": "bridge",
            "bridge": netns.BRIDGE,
            "isGateway": True,
            "isDefaultGateway": False,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": netns.POD_CIDR, "gateway": netns.NODE_HOST_IP}]],
                "routes": [{"dst": SERVICE_CIDR}, {"dst": POD_IDENTITY_ROUTE}],
                "dataDir": str(paths.root / "cni-ipam"),
            },
        }],
    }


def _write_configs(stack: Stack, pki: Pki, paths: NodePaths) -> Path:
    etc, layout = paths.etc, stack.layout
    for d in (etc, paths.run, paths.cni_conf):
        d.mkdir(parents=True, exist_ok=True)
    node_api = f"https://{netns.NODE_HOST_IP}:{stack.ports.apiserver}"  # through the forwarder
    write_cert_kubeconfig(etc / "kubelet.kubeconfig", node_api, pki.ca.cert, user_name=f"system:node:{NODE_NAME}",
                          cert=pki.kubelet.cert, key=pki.kubelet.key)
    write_cert_kubeconfig(etc / "kube-proxy.kubeconfig", node_api, pki.ca.cert, user_name="system:kube-proxy",
                          cert=pki.kube_proxy.cert, key=pki.kube_proxy.key)
    containerd = paths.root / "containerd"
    (etc / "containerd.toml").write_text(f"""\
version = 2
root = "{containerd / 'root'}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{IN_NODE_SOCKET}"

[ttrpc]
  address = "{IN_NODE_SOCKET}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{containerd / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause.REFERENCE}"
  disable_apparmor = true
  # CAP_SYS_RESOURCE is missing here: without this runc cannot lower the pause container's oom score
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{paths.cni_conf}"
    max_conf_num = 1
""")
    (paths.cni_conf / "10-vso.conflist").write_text(json.dumps(cni_config(paths), indent=2))
    # No resolver: a pod's DNS query goes to its own loopback and is refused at once.
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    cgroup_root = _cgroup_root(stack)
    _create_cgroups(stack, cgroup_root)
    _write_yaml(etc / "kubelet.yaml", {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failSwapOn": False,
        "address": netns.NODE_HOST_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca.cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{IN_NODE_SOCKET}",
        "volumePluginDir": f"{IN_NODE_KUBELET_ROOT}/volume-plugins",
        "podLogsDir": "/var/log/pods",
        "resolvConf": str(etc / "resolv.conf"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    })
    _write_yaml(etc / "kube-proxy.yaml", {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(etc / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": netns.POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # leave conntrack sysctls alone (some are machine-wide)
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    })
    kube = stack.binaries.kube_apiserver.parent
    spec = {
        "netns": netns_name(stack),
        "logs": str(layout.logs),
        "containerd_socket": str(paths.containerd_socket),
        "containerd_socket_inside": IN_NODE_SOCKET,
        "pause_archive": str(pause.ensure()),
        # containerd's root in memory: importing the operator image and deleting it at `down` cost
        # 20 s and 10 s on disk here; the tmpfs vanishes with the node's mount namespace
        "tmpfs": {str(containerd / "root"): f"size={CONTAINERD_TMPFS},mode=0700"},
        # the node's containerd and kubelet resolve nothing either: no image is pulled from anywhere
        "binds": {"/run": str(paths.run), "/var/log": str(paths.root / "var-log"),
                  "/etc/resolv.conf": str(etc / "resolv.conf")},
        "overlays": {"/var/lib": str(paths.root / "var-lib")},
        "processes": {
            "containerd": {"argv": ["containerd", "--config", str(etc / "containerd.toml")]},
            "kubelet": {"argv": [
                str(kube / "kubelet"),
                f"--config={etc / 'kubelet.yaml'}",
                f"--kubeconfig={etc / 'kubelet.kubeconfig'}",
                f"--root-dir={IN_NODE_KUBELET_ROOT}",
                f"--cert-dir={IN_NODE_KUBELET_ROOT}/pki",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={netns.NODE_HOST_IP}",
            ]},
            "kube-proxy": {"argv": [str(kube / "kube-proxy"), f"--config={etc / 'kube-proxy.yaml'}"]},
        },
    }
    spec_path = etc / "node-init.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    return spec_path


# --------------------------------------------------------------------------- images


def ctr(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``ctr`` against the node's containerd, from the host: run in the socket's directory with a
    relative address, so a deep stack directory cannot push the path past ``UNIX_PATH_MAX``."""
    sock = NodePaths.of(stack.layout).containerd_socket
    return subprocess.run(["ctr", "--address", sock.name, "--namespace", "k8s.io", *args], cwd=sock.parent,
                          check=True, capture_output=True, text=True, timeout=timeout)


def import_image(stack: Stack, archive: Path, reference: str) -> float:
    """Import a docker-archive into the node's containerd; record ``reference`` as VSO_IMAGE."""
    started = time.monotonic()
    try:
        ctr(stack, "images", "import", str(archive))
    except subprocess.CalledProcessError as exc:
        raise StackError(f"ctr images import {archive} failed: {exc.stderr.strip()}") from exc
    NodePaths.of(stack.layout).image_ref_file.write_text(reference)
    return time.monotonic() - started


def loaded_image(layout: Layout) -> str | None:
    path = NodePaths.of(layout).image_ref_file
    return path.read_text().strip() if path.is_file() else None


# --------------------------------------------------------------------------- env, health, cleanup


def env(stack: Stack) -> dict[str, str]:
    out = {
        "VSO_NODE_HOST_IP": netns.NODE_HOST_IP,
        "VSO_NODE_NETNS": netns_name(stack),
        "VSO_NODE_NAME": NODE_NAME,
        "VSO_POD_CIDR": netns.POD_CIDR,
        "VSO_CONTAINERD_ADDRESS": str(NodePaths.of(stack.layout).containerd_socket),
        # what pods use: the same services as on the host's loopback, at the node's host address
        "VSO_NODE_KUBE_API": f"https://{netns.NODE_HOST_IP}:{stack.ports.apiserver}",
        "VSO_NODE_VAULT_ADDR": f"https://{netns.NODE_HOST_IP}:{stack.ports.bao}",  # TLS: the cert names this IP
        "VSO_NODE_STS_ENDPOINT": f"http://{netns.NODE_HOST_IP}:{stack.ports.emulator}",
    }
    image = loaded_image(stack.layout)
    if image:
        out["VSO_IMAGE"] = image
    return out


def cleanup(layout: Layout, ports: Ports) -> list[str]:
    """After the node's processes are gone: delete the namespace and the node's cgroups.
    Returns what could not be removed (empty when clean)."""
    leftovers: list[str] = []
    name = netns.name_for(offset_of(ports))
    netns.delete(name)
    if netns.exists(name):
        leftovers.append(f"network namespace {name}")
    record = _cgroup_record(layout)
    recorded = json.loads(record.read_text()) if record.is_file() else []
    # plus what runc made in the cgroup v2 hierarchy of this hybrid setup (cgroup.procs-less "unified")
    own = [str(p) for p in sorted(Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PREFIX}{offset_of(ports)}"))]
    deadline = time.monotonic() + 10
    for top in [*reversed(recorded), *(p for p in own if p not in recorded)]:
        top_path = Path(top)
        while top_path.exists():
            try:
                for dirpath, _dirs, _files in sorted(os.walk(top_path), key=lambda w: -len(w[0])):
                    os.rmdir(dirpath)
            except OSError:
                if time.monotonic() > deadline:  # processes still dying in it
                    leftovers.append(f"cgroup {top_path}")
                    break
                time.sleep(0.2)
    if not leftovers:
        record.unlink(missing_ok=True)
    return leftovers
