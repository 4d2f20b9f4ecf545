"""Prometheus metrics. Labels carry names and reasons, never a secret value."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_NS = "vault_sts_operator"

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
SCHEDULED_CREDENTIALS = Gauge(f"{_NS}_credentials_scheduled",
                              "AssumedRoleCredentials this replica knows and schedules")
ROLLOUT_RESTARTS = Counter(f"{_NS}_rollout_restarts_total", "Workloads restarted after a rotation", ["kind"])


class CredentialExpiry(Collector):
    """The two per-credential series, computed at scrape time from the scheduler's own record of each
    credential's expiry (one float each). Two Gauge children per credential cost about 1.4 KB, 14 MB
    at ten thousand; a deleted credential's series go with it from the scheduler."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, str, float]]] = lambda: ()

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked names: the series come and go with the credentials

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(f"{_NS}_credential_seconds_until_expiry",
                              "Seconds until the issued credentials of a Secret expire", labels=["namespace", "name"]),
            GaugeMetricFamily(f"{_NS}_credential_expiration_timestamp_seconds",
                              "Unix time at which the credentials in a Secret expire (alert on this minus time())",
                              labels=["namespace", "name"]),
        ]

    def collect(self) -> Iterable[Metric]:
        until, stamp = self._families()
        now = time.time()
        for namespace, name, expiration in self.source():
            until.add_metric([namespace, name], expiration - now)
            stamp.add_metric([namespace, name], expiration)
        return [until, stamp]


CREDENTIAL_EXPIRY = CredentialExpiry()
REGISTRY.register(CREDENTIAL_EXPIRY)


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose /metrics on `port` (0 disables)."""
    if port:
        start_http_server(port, registry=registry)
