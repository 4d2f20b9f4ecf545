"""The operator's own settings (command-line options), as one value built at startup."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from vault_sts_operator.api.specs import VaultConnection


@dataclass(frozen=True)
class OperatorConfig:
    default_vault: VaultConnection | None = None
    vault_sa_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_port: int = 8000
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    log_format: str = "text"
    verbose: bool = False
    lease_namespace: str = field(default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"))
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    peering_name: str = ""  # empty: standalone (no kopf peering)
    sts_concurrency: int = 16
    worker_threads: int = 16
    # Scheduler workers: a pass mostly waits on the API server (three requests) and STS, so more passes
    # than cores are in flight; STS calls stay bounded by sts_concurrency.
    max_concurrent_passes: int = 32
    restart_debounce_seconds: float = 10.0
