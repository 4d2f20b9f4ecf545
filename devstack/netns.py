"""The node's network namespace: created by the stack, the only place pod traffic can go.

Inside it: loopback and one bridge (``vso0``) holding ``NODE_HOST_IP``, the address where the kubelet,
kube-proxy, and the forwarders to the host's apiserver, OpenBao and STS emulator listen. Pods hang off
the bridge (CNI bridge plugin) with routes only to the pod range and the Service range (the namespace itself has
the same Service route, for hostNetwork pods): there is no
default route and no interface leading out of the namespace, so a packet can reach nothing but the
namespace's own addresses. The host reaches into it only through the forwarder's unix socket (see
``devstack/netns_forward.py``) or by entering it (``ip netns exec``).

Deleting the namespace (``ip netns del``) removes the bridge, every pod veth end and kube-proxy's
nftables rules with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

NODE_HOST_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
POD_PREFIX = 24
BRIDGE = "vso0"
SERVICE_CIDR = "10.96.0.0/16"  # the API server's --service-cluster-ip-range
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def name_for(offset: int) -> str:
    """One namespace per stack: two stacks with different port offsets coexist."""
    return f"vso-node-{offset}"


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def create(name: str) -> None:
    """Create the namespace with loopback up and the bridge holding ``NODE_HOST_IP`` (idempotent)."""
    if exists(name):
        delete(name)
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", name, "addr", "add", f"{NODE_HOST_IP}/{POD_PREFIX}", "dev", BRIDGE)
        _ip("-n", name, "link", "set", BRIDGE, "up")
        # The node's own processes (hostNetwork pods such as the Pod Identity agent) reach Services as on a
        # real node: a route must exist before kube-proxy's output DNAT rewrites the ClusterIP (a real node has
        # a default route; this namespace has none). It leads onto the bridge, inside the namespace.
        _ip("-n", name, "route", "add", SERVICE_CIDR, "dev", BRIDGE)
        # Forwarding between bridge ports (Service DNAT back onto the bridge). This sysctl belongs to
        # the namespace; there is no other interface to forward to.
        subprocess.run(
            ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
        )
    except BaseException:
        delete(name)
        raise


def delete(name: str) -> None:
    if exists(name):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread in the namespace ``name`` (sockets made there stay there).

    ``os.setns`` arrives in Python 3.12; this project runs on 3.11, hence ctypes. setns(2) switches
    only the calling thread, so callers must not await or hand work to other threads inside.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(NETNS_DIR / name, "rb") as target:
        setns(target.fileno())
        try:
            yield
        finally:
            setns(home.fileno())
