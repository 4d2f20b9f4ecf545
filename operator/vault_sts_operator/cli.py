"""`vault-sts-operator`: `run` the operator; `status`, `rotate`, `check-identity` and `mfa enroll` for people."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vault_sts_operator import __version__
from vault_sts_operator.api.specs import KubernetesAuth, SecretKeyRef, TokenAuth, VaultAuth, VaultConnection
from vault_sts_operator.config import OperatorConfig, PodIdentityConfig
from vault_sts_operator.domain.destinations import AWS_STS_ENDPOINTS, pattern_problems
from vault_sts_operator.domain.leader import ElectionTiming

LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vault-sts-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (KUBECONFIG or in-cluster config)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch only this namespace (repeatable; globs allowed)")
    run.add_argument("--vault-address", default=os.environ.get("VAULT_ADDR", ""),
                     help="default Vault address for MFAIdentities that name none (env VAULT_ADDR)")
    run.add_argument("--vault-namespace", default="", help="default Vault/OpenBao namespace")
    run.add_argument("--vault-ca-file", default="", help="PEM CA bundle for the default Vault address")
    run.add_argument("--vault-auth", choices=["kubernetes", "token"], default="kubernetes",
                     help="default Vault auth method")
    run.add_argument("--vault-kubernetes-role", default="vault-sts-operator",
                     help="role for the default kubernetes auth")
    run.add_argument("--vault-kubernetes-mount", default="kubernetes")
    run.add_argument("--vault-token-secret", default="", metavar="NS/NAME/KEY",
                     help="Secret key holding a Vault token, for --vault-auth=token")
    run.add_argument("--vault-sa-token-file", default=os.environ.get("VSO_VAULT_SA_TOKEN_FILE",
                                                                     OperatorConfig.vault_sa_token_file),
                     help="ServiceAccount JWT presented to Vault's kubernetes auth: a projected token with its own "
                          "audience (the chart mounts one), not the automounted token (env VSO_VAULT_SA_TOKEN_FILE)")
    run.add_argument("--secret-ref-namespace", default=os.environ.get("VSO_SECRET_REF_NAMESPACE", ""), metavar="NS",
                     help="the one namespace where Secrets named by MFAIdentities (tokenSecretRef, secretIdRef, "
                          "caSecretRef) may live (default: the operator's namespace; env VSO_SECRET_REF_NAMESPACE)")
    run.add_argument("--allow-insecure-http", action="store_true",
                     default=os.environ.get("VSO_ALLOW_INSECURE_HTTP", "").lower() in ("1", "true", "yes"),
                     help="DEVELOPMENT ONLY: allow http:// Vault and STS addresses (env VSO_ALLOW_INSECURE_HTTP)")
    run.add_argument("--allowed-vault-address", action="append", default=[], metavar="URL",
                     help="a Vault address MFAIdentities may name besides --vault-address (repeatable); any other is "
                          "refused (InvalidSpec) before a connection is opened")
    run.add_argument("--allowed-sts-endpoint", action="append", default=[], metavar="URL",
                     help="an STS endpoint MFAIdentities may name (repeatable; '*' stands for one DNS label); default: "
                          "AWS's public endpoints of every partition")
    run.add_argument("--service-account", default=os.environ.get("POD_SERVICE_ACCOUNT", ""), metavar="NAME",
                     help="the operator's own ServiceAccount in --lease-namespace: a Vault other than the default one "
                          "gets a token of its own audience from a TokenRequest for it (env POD_SERVICE_ACCOUNT)")
    run.add_argument("--watch-secrets", action=argparse.BooleanOptionalAction, default=True,
                     help="watch the operator's own Secrets (label-selected; needs list/watch on Secrets) so one "
                          "deleted by hand is written again at once; with --no-watch-secrets it comes back at the "
                          "next by-name check (--secret-check-interval)")
    run.add_argument("--secret-check-interval", type=float, default=3600.0, metavar="SECONDS",
                     help="longest sleep between two passes of a credential, each of which reads its Secret by name "
                          "(the chart sets 45 with --no-watch-secrets, so a deleted Secret is back within a minute)")
    run.add_argument("--metrics-port", type=int, default=8000, help="Prometheus /metrics port (0: off)")
    run.add_argument("--metrics-secure", type=_flag, nargs="?", const=True, metavar="BOOL",
                     default=_flag(os.environ.get("VSO_METRICS_SECURE", "true")),
                     help="serve /metrics over HTTPS to bearer tokens the API server authenticates (TokenReview) "
                          "and allows `get /metrics` (SubjectAccessReview), as controller-runtime does (default); "
                          "--metrics-secure=false: plain HTTP, no authentication, for a port protected otherwise "
                          "(env VSO_METRICS_SECURE)")
    run.add_argument("--metrics-cert-dir", default=os.environ.get("VSO_METRICS_CERT_DIR", ""), metavar="DIR",
                     help="directory holding tls.crt and tls.key for /metrics (e.g. a cert-manager Secret), read "
                          "again when they change; default: a self-signed certificate made at start "
                          "(env VSO_METRICS_CERT_DIR)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                     help="where the probes are served: /healthz (liveness) and /readyz on this URL's host and port "
                          "('' off)")
    run.add_argument("--watch-stall-seconds", type=float, default=OperatorConfig.watch_stall_seconds, metavar="SECONDS",
                     help="/healthz fails once a watch has had no event, bookmark or completed list for this long "
                          "(default %(default)s; each watch is renewed within 10 min)")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--verbose", action="store_true", help="debug level (as --log-level=debug)")
    run.add_argument("--log-level", choices=LOG_LEVELS, default="",
                     help="the operator's log level (default: info, or debug with --verbose); boto3, botocore "
                          "and urllib3 stay at warning whatever the level (their debug lines carry request bodies)")
    run.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                     help="namespace of the per-MFA-device Leases (env POD_NAMESPACE)")
    run.add_argument("--leader-election-lease", default="", metavar="NAME",
                     help="elect one active replica with a coordination.k8s.io Lease of this name in "
                          "--lease-namespace (the chart sets it); default: standalone, always active")
    run.add_argument("--leader-election-lease-duration", type=float, default=15.0, metavar="SECONDS",
                     help="how long a standby waits after the leader's last renewal before it takes over (client-go's "
                          "LeaseDuration, default %(default)s)")
    run.add_argument("--leader-election-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                     help="how long the leader keeps trying to renew before it stops leading (default %(default)s)")
    run.add_argument("--leader-election-retry-period", type=float, default=2.0, metavar="SECONDS",
                     help="how often candidates try and the leader renews (default %(default)s)")
    run.add_argument("--sts-concurrency", type=int, default=16, help="STS calls in flight at most")
    run.add_argument("--sts-rate", type=float, default=OperatorConfig.sts_rate, metavar="PER_SECOND",
                     help="STS calls started per second at most, all identities together; 0: no limit "
                          "(default %(default)s: 10,000 credentials due at once take 100 s, a sixth of the "
                          "request rate STS users report as its limit)")
    run.add_argument("--sts-burst", type=int, default=OperatorConfig.sts_burst,
                     help="STS calls that may start at once before --sts-rate paces them (default %(default)s)")
    pod = PodIdentityConfig()
    run.add_argument("--pod-identity", action="store_true",
                     help="serve mode PodIdentity: node agents ask this operator for pods' credentials "
                          "(docs/pod-identity.md)")
    run.add_argument("--pod-identity-port", type=int, default=pod.port, help="HTTPS port for node agents")
    run.add_argument("--pod-identity-cert-dir", default="", metavar="DIR",
                     help="directory holding tls.crt and tls.key for the agents' endpoint (empty: self-signed)")
    run.add_argument("--pod-identity-audience", default=pod.audience, help="audience of pods' projected tokens")
    run.add_argument("--pod-identity-agent-audience", default=pod.agent_audience,
                     help="audience of the node agents' own tokens")
    run.add_argument("--pod-identity-agent-service-account", default="", metavar="NAME",
                     help="the agents' ServiceAccount, in the operator's namespace")
    run.add_argument("--pod-identity-service", default="", metavar="NAME",
                     help="the selector-less Service the leader publishes itself behind (EndpointSlice "
                          "NAME-leader, address from $POD_IP)")
    run.add_argument("--restart-debounce", type=float, default=10.0, metavar="SECONDS",
                     help="rollout restarts asked for within this window are done once")
    run.add_argument("--rotate-min-interval", type=float, default=OperatorConfig.rotate_min_interval_seconds,
                     metavar="SECONDS", help="the rotate annotation reissues a Secret only once it is this old "
                     "(default %(default)s); an earlier request waits until then")

    _add_verbs(sub)
    return parser


def _add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vault_sts_operator import ctl  # the verbs for people: status, rotate, check-identity, mfa enroll
    from vault_sts_operator.agent import main as agent  # `agent serve`, `agent init-link`: the node agent

    ctl.add_verbs(sub)
    agent.add_verbs(sub)


def _pod_identity(args: argparse.Namespace) -> PodIdentityConfig | None:
    if not args.pod_identity:
        return None
    config = PodIdentityConfig(port=args.pod_identity_port, cert_dir=args.pod_identity_cert_dir,
                               audience=args.pod_identity_audience, agent_audience=args.pod_identity_agent_audience,
                               agent_service_account=args.pod_identity_agent_service_account,
                               service=args.pod_identity_service)
    if not config.agent_service_account:
        raise SystemExit("--pod-identity needs --pod-identity-agent-service-account (the agents' ServiceAccount)")
    if config.audience == config.agent_audience:
        raise SystemExit("--pod-identity-audience and --pod-identity-agent-audience must differ (a pod's token must "
                         "never pass as an agent's)")
    if config.service and not config.pod_ip:
        raise SystemExit("--pod-identity-service needs this pod's IP in $POD_IP (the downward API's status.podIP)")
    return config


def _flag(value: str) -> bool:
    """A boolean flag's value as Go's flag package reads it (`--metrics-secure=false`)."""
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r} (true or false)")


def _default_vault(args: argparse.Namespace) -> VaultConnection | None:
    if not args.vault_address:
        return None
    auth: VaultAuth
    if args.vault_auth == "token":
        parts = args.vault_token_secret.split("/")
        if len(parts) != 3:
            raise SystemExit("--vault-auth=token needs --vault-token-secret NAMESPACE/NAME/KEY")
        auth = TokenAuth(token_ref=SecretKeyRef(namespace=parts[0], name=parts[1], key=parts[2]))
    else:
        auth = KubernetesAuth(role=args.vault_kubernetes_role, mount=args.vault_kubernetes_mount)
    ca = ""
    if args.vault_ca_file:
        with open(args.vault_ca_file) as handle:
            ca = handle.read()
    if args.vault_address.lower().startswith("http://") and not args.allow_insecure_http:
        raise SystemExit(f"--vault-address {args.vault_address} uses http://: plain HTTP needs "
                         "--allow-insecure-http (a development setting); use https://")
    return VaultConnection(address=args.vault_address.rstrip("/"), auth=auth, namespace=args.vault_namespace,
                           ca_bundle=ca)


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    timing = ElectionTiming(lease_duration=args.leader_election_lease_duration,
                            renew_deadline=args.leader_election_renew_deadline,
                            retry_period=args.leader_election_retry_period)
    if timing.problems():
        raise SystemExit("--leader-election-*: " + "; ".join(timing.problems()))
    if args.sts_rate < 0 or args.sts_burst < 1:
        raise SystemExit("--sts-rate must be 0 (no limit) or positive, and --sts-burst at least 1")
    problems = pattern_problems([*args.allowed_vault_address, *args.allowed_sts_endpoint])
    if problems:
        raise SystemExit("--allowed-vault-address / --allowed-sts-endpoint: " + "; ".join(problems))
    return OperatorConfig(
        default_vault=_default_vault(args),
        allowed_vault_addresses=tuple(args.allowed_vault_address),
        allowed_sts_endpoints=tuple(args.allowed_sts_endpoint) or AWS_STS_ENDPOINTS,
        service_account=args.service_account,
        vault_sa_token_file=args.vault_sa_token_file,
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port,
        metrics_secure=args.metrics_secure,
        metrics_cert_dir=args.metrics_cert_dir,
        liveness_endpoint=args.liveness,
        watch_stall_seconds=args.watch_stall_seconds,
        log_format=args.log_format,
        verbose=args.verbose,
        lease_namespace=args.lease_namespace,
        leader_election_lease=args.leader_election_lease,
        election=timing,
        sts_concurrency=args.sts_concurrency,
        pod_identity=_pod_identity(args),
        sts_rate=args.sts_rate,
        sts_burst=args.sts_burst,
        restart_debounce_seconds=args.restart_debounce,
        rotate_min_interval_seconds=args.rotate_min_interval,
        secret_ref_namespace=args.secret_ref_namespace,
        allow_insecure_http=args.allow_insecure_http,
        watch_secrets=args.watch_secrets,
        secret_check_seconds=args.secret_check_interval,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agent":  # the node agent: none of the operator's modules below are loaded
        from vault_sts_operator.agent import main as agent

        return agent.run(args)
    if args.command != "run":
        from vault_sts_operator import ctl

        return ctl.dispatch(args)
    config = config_from_args(args)
    import asyncio

    from vault_sts_operator import logsetup, runtime

    logsetup.configure(log_format=config.log_format,
                       level=args.log_level or ("debug" if config.verbose else "info"))
    return asyncio.run(runtime.serve(config))


if __name__ == "__main__":
    sys.exit(main())
