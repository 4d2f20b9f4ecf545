"""Prometheus metrics. Labels carry names and reasons, never a secret value."""

from __future__ import annotations

import contextlib

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_NS = "vault_sts_operator"

SECONDS_UNTIL_EXPIRY = Gauge(
    f"{_NS}_credential_seconds_until_expiry", "Seconds until the issued credentials of a Secret expire",
    ["namespace", "name"])
EXPIRATION_TIMESTAMP = Gauge(
    f"{_NS}_credential_expiration_timestamp_seconds",
    "Unix time at which the credentials in a Secret expire (alert on this minus time())", ["namespace", "name"])
ROTATIONS = Counter(f"{_NS}_rotations_total", "Credentials issued into Secrets", ["namespace", "trigger"])
FAILURES = Counter(f"{_NS}_failures_total", "Failed issuing attempts by condition reason", ["reason"])
MFA_WAITS = Counter(f"{_NS}_mfa_waits_total", "Waits for the next TOTP period because the current code was spent")
MFA_WAIT_SECONDS = Counter(f"{_NS}_mfa_wait_seconds_total", "Seconds spent waiting for a fresh TOTP period")
TOTP_CODES_USED = Counter(f"{_NS}_totp_codes_used_total", "TOTP codes sent to AWS (or Vault's AWS engine)",
                          ["identity"])
MFA_SESSIONS = Counter(f"{_NS}_mfa_sessions_created_total", "MFA sessions created (GetSessionToken)", ["identity"])
VAULT_CALLS = Counter(f"{_NS}_vault_requests_total", "Vault requests", ["operation", "outcome"])
VAULT_LATENCY = Histogram(f"{_NS}_vault_request_seconds", "Vault request latency", ["operation"])
STS_CALLS = Counter(f"{_NS}_sts_requests_total", "STS requests", ["action", "outcome"])
STS_LATENCY = Histogram(f"{_NS}_sts_request_seconds", "STS request latency", ["action"])
CLOCK_SKEW_SECONDS = Gauge(
    f"{_NS}_clock_skew_seconds",
    "How far ahead of this replica's clock another replica's MFA device record was last seen (0: within tolerance)",
    ["source"])
CLOCK_SKEW_EVENTS = Counter(f"{_NS}_clock_skew_detected_total",
                            "MFA device records found ahead of this replica's clock beyond tolerance", ["source"])
SCHEDULED_CREDENTIALS = Gauge(f"{_NS}_credentials_scheduled",
                              "AssumedRoleCredentials this replica knows and schedules")
ROLLOUT_RESTARTS = Counter(f"{_NS}_rollout_restarts_total", "Workloads restarted after a rotation", ["kind"])
ROLLOUT_RESTARTS_REFUSED = Counter(f"{_NS}_rollout_restarts_refused_total",
                                   "Rollout restarts not done: the workload does not opt in", ["kind"])


def forget_credential(namespace: str, name: str) -> None:
    """Drop the per-credential series of a deleted AssumedRoleCredential."""
    for gauge in (SECONDS_UNTIL_EXPIRY, EXPIRATION_TIMESTAMP):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose /metrics on `port` (0 disables)."""
    if port:
        start_http_server(port, registry=registry)
