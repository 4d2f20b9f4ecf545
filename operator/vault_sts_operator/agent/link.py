"""`agent init-link`: the link that carries the agent's addresses on the node (an init container, NET_ADMIN).

Three rtnetlink requests, sent with the standard library's AF_NETLINK socket: create a dummy link (as the EKS
agent's `initialize` does with vishvananda/netlink), put the addresses on it, set it up. Written here rather than
run with iproute2's `ip` or pyroute2: the operator's image is `python:3.11-slim` with nothing executed in its
runtime stage (no apt, no shell: tests/packaging), and pyroute2 would be a new locked dependency of every
operator process for three fixed messages. Every step is idempotent (an existing link is kept, addresses are
replaced), so a restarted init container changes nothing.

The link outlives the agent's pod on purpose: while the agent restarts, connections to its address are refused at
once (the SDKs retry) instead of timing out. No route is added: an address on a local link is in the kernel's
local table, and the pods' route to it is the CNI's (docs/design/pod-identity.md 8.1). A kernel without the dummy
driver (some minimal kernels) can carry the addresses on `lo` instead (`--link lo`): the same local delivery.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

DEFAULT_LINK = "vaultsts-pi0"
DEFAULT_ADDRESSES = ("169.254.170.23/32",)
IPV6_ADDRESS = "fd00:ec2::23/128"

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_NEWADDR = 16, 20
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
_IFLA_IFNAME, _IFLA_LINKINFO, _IFLA_INFO_KIND = 3, 18, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_IFA_F_NODAD = 0x02
_IFF_UP = 0x1
_HEADER = struct.Struct("=LHHLL")  # nlmsghdr: length, type, flags, sequence, port id
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index


class LinkError(Exception):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


class Rtnetlink:
    """A NETLINK_ROUTE socket that sends one request at a time and returns the kernel's answer (0 or an errno)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # 0: NETLINK_ROUTE
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, flags: int, payload: bytes) -> int:
        self._seq += 1
        message = _HEADER.pack(_HEADER.size + len(payload), kind, flags | _NLM_F_REQUEST | _NLM_F_ACK, self._seq, 0)
        self._sock.send(message + payload)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, answer, _, seq, _ = _HEADER.unpack_from(data, offset)
                if answer == _NLMSG_ERROR and seq == self._seq:
                    (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                    return -int(code)
                offset += max((length + 3) & ~3, _HEADER.size)


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


def _index(link: str) -> int | None:
    try:
        return socket.if_nametoindex(link)
    except OSError:
        return None


def init_link(link: str, addresses: Sequence[str], *, ipv6: Callable[[str], bool] = ipv6_enabled,
              netlink: Callable[[], Rtnetlink] = Rtnetlink) -> list[str]:
    """Make the dummy link (unless it exists) with these addresses and set it up; returns the addresses assigned.
    An IPv6 address is skipped, with a log line, when the node has IPv6 off; an IPv4 address that cannot be
    assigned is an error."""
    if not 1 <= len(link) <= 15:
        raise LinkError(f"link name {link!r}: 1 to 15 characters")
    parsed = [ipaddress.ip_interface(text) for text in addresses]
    nl = netlink()
    try:
        index = _index(link)
        if index is None:
            info = _attr(_IFLA_INFO_KIND, b"dummy\0")
            code = nl.request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL,
                              _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                              + _attr(_IFLA_IFNAME, link.encode() + b"\0") + _attr(_IFLA_LINKINFO, info))
            if code == errno.EOPNOTSUPP:
                raise LinkError(f"creating dummy link {link}: this kernel has no dummy link driver; carry the "
                                "addresses on the loopback link instead (--link lo, chart podIdentity.agent.linkName)")
            if code not in (0, errno.EEXIST):  # EEXIST: another init container made it meanwhile
                raise LinkError(f"creating dummy link {link}: {os.strerror(code)}")
            index = _index(link)
            if index is None:
                raise LinkError(f"dummy link {link} was created but is not there")
            log.info("created dummy link %s", link)
        assigned = []
        for interface in parsed:
            if interface.version == 6 and not ipv6(link):
                log.info("IPv6 is disabled on this node: %s not assigned to %s", interface, link)
                continue
            packed = interface.ip.packed
            family = socket.AF_INET6 if interface.version == 6 else socket.AF_INET
            # nodad: without it an IPv6 address stays tentative for a second and the agent cannot bind it yet.
            flags = _IFA_F_NODAD if interface.version == 6 else 0
            payload = _IFADDR.pack(family, interface.network.prefixlen, flags, 0, index) + _attr(_IFA_LOCAL, packed) \
                + _attr(_IFA_ADDRESS, packed)
            code = nl.request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_REPLACE, payload)
            if code != 0:
                raise LinkError(f"adding {interface} to {link}: {os.strerror(code)}")
            assigned.append(str(interface))
        code = nl.request(_RTM_NEWLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, _IFF_UP, _IFF_UP))
        if code != 0:
            raise LinkError(f"setting {link} up: {os.strerror(code)}")
    finally:
        nl.close()
    log.info("link %s up with %s", link, ", ".join(assigned))
    return assigned
