"""Forwarders between the host's loopback and the node's network namespace (one small process).

``python -m devstack.netns_forward --netns NAME --address IP --port P... --connect-socket PATH --allow CIDR``

1. For each ``--port P``: listen on ``IP:P`` *inside* the namespace and relay every connection to
   ``127.0.0.1:P`` on the host. Pods reach the apiserver, OpenBao and the STS emulator this way at
   ``VSO_NODE_HOST_IP`` (the host processes keep listening on loopback only).
2. ``--connect-socket PATH``: an HTTP CONNECT proxy on a unix socket, whose outgoing connections are
   opened *inside* the namespace and only to addresses in ``--allow``. kube-apiserver's egress
   selector (``cluster``) dials kubelets through it, for ``kubectl logs``/``exec``/``port-forward``:
   the host needs no interface, route or address in the node's network.

Hand-written rather than socat: socat is not installed here, one socat process cannot listen in
one namespace and connect in another (it would take two per port, bridged by unix sockets), and
socat has no CONNECT server for kube-apiserver's egress selector. This is ~100 lines of asyncio:
a socket keeps the namespace it was created in, so the process enters the namespace only to create
sockets (``devstack.netns.entered``) and relays bytes from the host side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from devstack import netns

BUFFER = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


def _listener_in(name: str, address: str, port: int) -> socket.socket:
    with netns.entered(name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _connect_in(name: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    with netns.entered(name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 10)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _forward_handler(port: int) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await _relay((reader, writer), upstream)

    return handle


def _connect_handler(name: str, allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
            host, _, port_text = target.rpartition(":")
            ip = ipaddress.ip_address(host.strip("[]"))
            if method != "CONNECT" or not any(ip in net for net in allowed):
                writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                writer.close()
                return
            upstream = await _connect_in(name, str(ip), int(port_text))
        except (ValueError, OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _relay((reader, writer), upstream)

    return handle


async def serve(args: argparse.Namespace) -> None:
    servers = []
    for port in args.port:
        sock = _listener_in(args.netns, args.address, port)
        servers.append(await asyncio.start_server(_forward_handler(port), sock=sock))
    if args.connect_socket:
        path = Path(args.connect_socket)
        path.unlink(missing_ok=True)
        allowed = [ipaddress.ip_network(c) for c in args.allow]
        servers.append(await asyncio.start_unix_server(_connect_handler(args.netns, allowed), path=str(path)))
        os.chmod(path, 0o600)
    print(f"forwarding {args.address}:{args.port} in netns {args.netns} -> 127.0.0.1; CONNECT on "
          f"{args.connect_socket or '-'} to {args.allow}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    if args.connect_socket:
        with contextlib.suppress(OSError):
            Path(args.connect_socket).unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.netns_forward", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, action="append", default=[])
    parser.add_argument("--connect-socket", default="")
    parser.add_argument("--allow", action="append", default=[])
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
