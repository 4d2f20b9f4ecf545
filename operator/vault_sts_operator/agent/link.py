"""`agent init-link`: the dummy link that carries the agent's addresses on the node (an init container, NET_ADMIN).

The link is made with iproute2's `ip` rather than pyroute2: it is a one-shot step at pod start, and pyroute2 would
be a new Python dependency of the operator's image (and of its import-time memory) for five commands; the image
needs the small Debian package iproute2 instead. Every step is
idempotent (`ip addr replace`, the link made only when absent), so a restarted init container changes nothing.
The link outlives the agent's pod on purpose: while the agent restarts, connections to its address are refused at
once (the SDKs retry) instead of timing out. No route is added: an address on a local link is in the kernel's
local table, and the pods' route to it is the CNI's (docs/design/pod-identity.md 8.1). On a kernel without the
dummy driver (CONFIG_DUMMY off, as on this project's Firecracker build machine) `--link lo` is the way: `lo` exists,
so it is not made, and an address on it is as local as on a dummy link.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess  # runs `ip` with a fixed argument list, no shell
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_LINK = "vaultsts-pi0"
DEFAULT_ADDRESSES = ("169.254.170.23/32",)
IPV6_ADDRESS = "fd00:ec2::23/128"


@dataclass(frozen=True)
class Result:
    returncode: int
    stderr: str


Runner = Callable[[Sequence[str]], Result]


def run_ip(args: Sequence[str]) -> Result:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    done = subprocess.run([ip, *args], capture_output=True, text=True, check=False)  # noqa: S603 - fixed arguments, no shell
    return Result(returncode=done.returncode, stderr=done.stderr.strip())


class LinkError(Exception):
    pass


def ipv6_enabled(link: str, proc: str = "/proc") -> bool:
    """Is IPv6 on for the node and for this link? (off: the sysctl says 1, or the kernel has no IPv6 at all)"""
    for scope in ("all", link):
        path = os.path.join(proc, "sys/net/ipv6/conf", scope, "disable_ipv6")
        try:
            with open(path) as handle:
                if handle.read().strip() == "1":
                    return False
        except FileNotFoundError:
            if scope == "all":
                return False
    return True


def init_link(link: str, addresses: Sequence[str], *, run: Runner = run_ip,
              ipv6: Callable[[str], bool] = ipv6_enabled) -> list[str]:
    """Make the dummy link with these addresses and set it up; returns the addresses assigned. An IPv6 address is
    skipped, with a log line, when the node has IPv6 off; an IPv4 address that cannot be assigned is an error."""
    if not 1 <= len(link) <= 15:
        raise LinkError(f"link name {link!r}: 1 to 15 characters")
    parsed = [ipaddress.ip_interface(text) for text in addresses]
    if run(["link", "show", "dev", link]).returncode != 0:
        made = run(["link", "add", link, "type", "dummy"])
        if made.returncode != 0 and "File exists" not in made.stderr:  # another init container made it meanwhile
            hint = (" (this kernel has no dummy link driver: --link lo puts the addresses on the loopback link "
                    "instead, which serves the same)" if "Unknown device type" in made.stderr else "")
            raise LinkError(f"ip link add {link} type dummy: {made.stderr}{hint}")
        log.info("created dummy link %s", link)
    assigned = []
    for interface in parsed:
        if interface.version == 6:
            if not ipv6(link):
                log.info("IPv6 is disabled on this node: %s not assigned to %s", interface, link)
                continue
            # nodad: without it the address stays tentative for a second and the agent cannot bind it yet.
            command = ["-6", "addr", "replace", str(interface), "dev", link, "nodad"]
        else:
            command = ["-4", "addr", "replace", str(interface), "dev", link]
        done = run(command)
        if done.returncode != 0:
            raise LinkError(f"ip {' '.join(command)}: {done.stderr}")
        assigned.append(str(interface))
    up = run(["link", "set", "dev", link, "up"])
    if up.returncode != 0:
        raise LinkError(f"ip link set dev {link} up: {up.stderr}")
    log.info("link %s up with %s", link, ", ".join(assigned))
    return assigned
