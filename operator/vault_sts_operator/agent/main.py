"""`vault-sts-operator agent serve` and `agent init-link`: flags and process lifecycle.

Imported by cli.py when it builds its parser, so this module imports only argparse-level things; aiohttp and
prometheus_client are imported when `serve` runs.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from vault_sts_operator.agent.link import DEFAULT_ADDRESSES, DEFAULT_LINK
from vault_sts_operator.domain.delivery import AGENT_REFRESH_BELOW

if TYPE_CHECKING:
    from vault_sts_operator.agent.server import Settings

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "169.254.170.23:80"
DEFAULT_PROBE = "127.0.0.1:8086"
POD_AUDIENCE = "vaultsts.io/pod-identity"
AGENT_TOKEN_FILE = "/var/run/secrets/vaultsts.io/agent/token"  # where the chart mounts it


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="the Pod Identity node agent (a DaemonSet on every node)",
                           description="The Pod Identity node agent: serves the AWS SDKs' container-credentials "
                                       "protocol on the node and asks the operator for each pod's credentials.")
    verbs = agent.add_subparsers(dest="agent_command", required=True)
    serve = verbs.add_parser("serve", help="serve /v1/credentials to the node's pods")
    serve.add_argument("--listen", action="append", default=[], metavar="HOST:PORT",
                       help=f"address for the SDKs (repeatable; IPv6 in brackets; default {DEFAULT_LISTEN}); the "
                            "Host header of a request must name one of these hosts")
    serve.add_argument("--probe-listen", default=DEFAULT_PROBE, metavar="HOST:PORT",
                       help="address of /healthz, /readyz and /metrics ('' off; default %(default)s)")
    serve.add_argument("--operator-url", default="", metavar="URL",
                       help="the operator's Pod Identity endpoint, e.g. https://10.96.0.5:443 (default: from "
                            "--operator-service-env)")
    serve.add_argument("--operator-service-env", default="", metavar="PREFIX",
                       help="build the URL from ${PREFIX}_SERVICE_HOST and ${PREFIX}_SERVICE_PORT, which the "
                            "kubelet sets for a Service of the pod's namespace (no DNS needed on the host network)")
    serve.add_argument("--server-name", default="", metavar="NAME",
                       help="the name the operator's certificate must carry (default: the URL's host)")
    serve.add_argument("--ca-file", default="", metavar="PEM", help="CA that signed the operator's certificate")
    serve.add_argument("--token-file", default=AGENT_TOKEN_FILE, metavar="PATH",
                       help="the agent's own projected token (audience vaultsts.io/pod-identity-agent), read again "
                            "for every call to the operator (default %(default)s)")
    serve.add_argument("--audience", default=POD_AUDIENCE,
                       help="audience the pods' tokens must carry (default %(default)s)")
    serve.add_argument("--revalidate-seconds", type=float, default=300.0, metavar="SECONDS",
                       help="ask the operator again about a pod token after this long (default %(default)s)")
    serve.add_argument("--refresh-margin-seconds", type=float, default=AGENT_REFRESH_BELOW.total_seconds(),
                       metavar="SECONDS", help="refresh a credential's copy once it has less than this left "
                                                "(default %(default)s: above botocore's 15-minute window)")
    serve.add_argument("--rate", type=float, default=1000.0, metavar="PER_SECOND",
                       help="requests per second the node's agent answers (default %(default)s)")
    serve.add_argument("--burst", type=int, default=500, help="requests at once before --rate paces them")
    serve.add_argument("--max-cache-entries", type=int, default=10_000, metavar="N",
                       help="pod tokens remembered at most (least recently used out first; default %(default)s)")
    serve.add_argument("--upstream-timeout", type=float, default=0.6, metavar="SECONDS",
                       help="longest wait for the operator while an SDK waits (default %(default)s; the fetch goes "
                            "on in the background for up to 5 s and the SDK's retry finds it)")
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    serve.set_defaults(handler=_serve)

    init = verbs.add_parser("init-link", help="create the dummy link carrying the agent's addresses (NET_ADMIN)")
    init.add_argument("--link", default=DEFAULT_LINK, help="link name (default %(default)s)")
    init.add_argument("--address", action="append", default=[], metavar="CIDR",
                      help=f"address to assign (repeatable; default {', '.join(DEFAULT_ADDRESSES)}); an IPv6 one "
                           "is skipped when the node has IPv6 off")
    init.add_argument("--log-format", choices=["text", "json"], default="text")
    init.set_defaults(handler=_init_link)


def run(args: argparse.Namespace) -> int:
    code: int = args.handler(args)
    return code


def operator_url(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    if args.operator_url:
        return str(args.operator_url).rstrip("/")
    if not args.operator_service_env:
        raise SystemExit("agent serve: give --operator-url or --operator-service-env")
    prefix = args.operator_service_env.upper().replace("-", "_")
    host = environ.get(f"{prefix}_SERVICE_HOST", "")
    port = environ.get(f"{prefix}_SERVICE_PORT", "")
    if not host or not port:
        raise SystemExit(f"agent serve: {prefix}_SERVICE_HOST and {prefix}_SERVICE_PORT are not set (the kubelet "
                         "sets them for a Service of the pod's namespace that existed when the pod started)")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def settings_from_args(args: argparse.Namespace) -> Settings:
    from vault_sts_operator.agent.server import Address, Settings

    try:
        listen = tuple(Address.parse(text) for text in (args.listen or [DEFAULT_LISTEN]))
        probe = Address.parse(args.probe_listen) if args.probe_listen else None
    except ValueError as exc:
        raise SystemExit(f"agent serve: {exc}") from None
    if args.rate <= 0 or args.burst < 1 or args.max_cache_entries < 1 or args.upstream_timeout <= 0:
        raise SystemExit("agent serve: --rate, --upstream-timeout must be positive; --burst, --max-cache-entries "
                         "at least 1")
    return Settings(listen=listen, probe=probe, audience=args.audience, upstream_timeout=args.upstream_timeout,
                    rate=args.rate, burst=args.burst)


def _logging(args: argparse.Namespace) -> None:
    from vault_sts_operator import logsetup

    logsetup.configure(log_format=args.log_format, level=getattr(args, "log_level", "info"))


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    _logging(args)
    url = operator_url(args)
    if not url.startswith("https://"):
        raise SystemExit(f"agent serve: the operator URL {url} is not https://")
    settings = settings_from_args(args)
    return asyncio.run(serve(args, url, settings))


async def serve(args: argparse.Namespace, url: str, settings: Settings) -> int:
    import asyncio
    import signal
    import ssl

    from vault_sts_operator.agent.cache import Cache
    from vault_sts_operator.agent.server import Agent, Running
    from vault_sts_operator.agent.upstream import Upstream

    upstream = Upstream(url=url, ca_file=args.ca_file, server_name=args.server_name, token_file=args.token_file)
    try:
        upstream.load_ca()  # readiness waits for the CA, not for the operator
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot load the operator's CA %s: %s", args.ca_file, exc)
        return 1
    cache = Cache(revalidate_seconds=args.revalidate_seconds, refresh_margin_seconds=args.refresh_margin_seconds,
                  max_tokens=args.max_cache_entries)
    running = Running(Agent(settings, upstream, cache=cache))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await running.start()
    except OSError as exc:
        log.error("cannot listen: %s (is the link made by `agent init-link`, and NET_BIND_SERVICE granted?)", exc)
        await running.stop()
        await upstream.close()
        return 1
    log.info("asking the operator at %s (certificate name %s)", url, args.server_name or "from the URL")
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await running.stop()
    await upstream.close()
    return 0


def _init_link(args: argparse.Namespace) -> int:
    from vault_sts_operator.agent.link import LinkError, init_link

    _logging(args)
    try:
        init_link(args.link, args.address or list(DEFAULT_ADDRESSES))
    except (LinkError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0
