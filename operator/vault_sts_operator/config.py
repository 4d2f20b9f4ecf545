"""The operator's own settings (command-line options), as one value built at startup."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from vault_sts_operator.api.specs import ConnectionRules, VaultConnection
from vault_sts_operator.domain.destinations import AWS_STS_ENDPOINTS
from vault_sts_operator.domain.leader import ElectionTiming


def is_namespace_pattern(namespace: str) -> bool:
    """Whether a `--namespace` value is a pattern (globs, `!` exclusions, comma lists; matched with fnmatch,
    so `[...]` too; domain/namespaces.py) rather than a namespace's name."""
    return any(ch in namespace for ch in "*?[!,")


@dataclass(frozen=True)
class PodIdentityConfig:
    """Mode PodIdentity (docs/pod-identity.md): the endpoint node agents ask, and who may ask it."""

    port: int = 8444
    cert_dir: str = ""  # tls.crt and tls.key (the chart's Secret); empty: self-signed (tests only)
    audience: str = "vaultsts.io/pod-identity"  # pods' projected tokens
    agent_audience: str = "vaultsts.io/pod-identity-agent"  # the agents' own tokens
    agent_service_account: str = ""  # in the operator's namespace
    service: str = ""  # the selector-less Service whose EndpointSlice the leader writes ('' none: standalone tests)
    pod_ip: str = field(default_factory=lambda: os.environ.get("POD_IP", ""))


@dataclass(frozen=True)
class OperatorConfig:
    default_vault: VaultConnection | None = None
    vault_sa_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_port: int = 8000
    # /metrics over HTTPS, to bearer tokens the API server authenticates and allows `get /metrics`
    # (services/metrics_server.py); False: plain HTTP and no authentication.
    metrics_secure: bool = True
    metrics_cert_dir: str = ""  # tls.crt and tls.key (e.g. a cert-manager Secret); empty: self-signed at start
    # Where /healthz (liveness) and /readyz are served ('' off); the path of the URL is ignored.
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    # /healthz fails once a watch has had no event, bookmark or completed list for this long (each watch ends
    # and starts again within 10 min, so a healthy one reports progress well inside it).
    watch_stall_seconds: float = 1200.0
    log_format: str = "text"
    verbose: bool = False
    lease_namespace: str = field(default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"))
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Leader election (services/leader.py): a Lease of this name in lease_namespace; '' = standalone (one
    # replica, always active). client-go's timing: lease duration, renew deadline, retry period.
    leader_election_lease: str = ""
    election: ElectionTiming = field(default_factory=ElectionTiming)
    sts_concurrency: int = 16
    # STS calls started per second at most, and at once (0: no rate limit; domain/rate.py). 100/s is about the
    # pace 10,000 new credentials converge at anyway (benchmarks/FINDINGS.md), a sixth of the ~600/s STS users
    # report as its limit; the design's 20/s made the 10,000-credential convergence five times slower (500 s).
    sts_rate: float = 100.0
    sts_burst: int = 100
    worker_threads: int = 16
    # Scheduler workers: a pass mostly waits on the API server (three requests) and STS, so more passes
    # than cores are in flight; STS calls stay bounded by sts_concurrency.
    max_concurrent_passes: int = 32
    restart_debounce_seconds: float = 10.0
    # A rotate annotation is honoured once the Secret is this old (docs/reference.md, "Rotating on demand").
    rotate_min_interval_seconds: float = 60.0
    # Where Secrets named by MFAIdentities (tokenSecretRef, secretIdRef, caSecretRef) may live;
    # empty: the operator's own namespace (lease_namespace) only.
    secret_ref_namespace: str = ""
    allow_insecure_http: bool = False  # development only: http:// for Vault and STS
    # The destinations MFAIdentities may name (domain/destinations.py): Vault addresses besides the default
    # one, and STS endpoint patterns. Anything else is InvalidSpec before a connection is opened.
    allowed_vault_addresses: tuple[str, ...] = ()
    allowed_sts_endpoints: tuple[str, ...] = AWS_STS_ENDPOINTS
    # The operator's own ServiceAccount (chart: the downward API's spec.serviceAccountName), for the
    # TokenRequests that give each Vault but the default a JWT of its own audience; in lease_namespace.
    service_account: str = field(default_factory=lambda: os.environ.get("POD_SERVICE_ACCOUNT", ""))
    # Watch the operator's own Secrets (label-selected) to bring back one deleted by hand.
    watch_secrets: bool = True
    # Longest sleep between two passes of a credential (each reads its Secret by name): without the
    # watch, this bounds how long a Secret deleted by hand stays away.
    secret_check_seconds: float = 3600.0
    pod_identity: PodIdentityConfig | None = None  # None: mode PodIdentity is refused (NotAllowed)

    @property
    def connection_rules(self) -> ConnectionRules:
        return ConnectionRules(secret_namespaces=(self.secret_ref_namespace,) if self.secret_ref_namespace else (),
                               allow_insecure_http=self.allow_insecure_http,
                               vault_addresses=self.allowed_vault_addresses,
                               sts_endpoints=self.allowed_sts_endpoints)
