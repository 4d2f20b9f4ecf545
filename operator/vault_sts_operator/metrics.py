"""Prometheus metrics. Labels carry names and reasons, never a secret value."""

from __future__ import annotations

import contextlib
import platform
import threading
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
CREDENTIAL_READY = Gauge(
    f"{_NS}_credential_ready_status",
    "1 when the AssumedRoleCredential is Ready, 0 when not; reason is its Ready condition's reason "
    "(one series per credential)", ["namespace", "name", "reason"])
RENEWAL_TIMESTAMP = Gauge(
    f"{_NS}_credential_renewal_timestamp_seconds", "Unix time of the credential's next scheduled rotation",
    ["namespace", "name"])
MFA_SESSION_EXPIRATION = Gauge(
    f"{_NS}_mfa_session_expiration_timestamp_seconds",
    "Unix time at which the identity's cached MFA session (GetSessionToken) expires", ["identity"])
BUILD_INFO = Gauge(f"{_NS}_build_info", "Always 1; the labels say which build runs",
                   ["version", "python_version"])

# The reason label of each credential's ready series, so a changed reason replaces the old series.
_ready_reasons: dict[tuple[str, str], str] = {}
_ready_lock = threading.Lock()


def credential_ready(namespace: str, name: str, *, ready: bool, reason: str) -> None:
    """Record the credential's Ready condition: one series per credential, value 1 or 0."""
    with _ready_lock:
        previous = _ready_reasons.get((namespace, name))
        if previous is not None and previous != reason:
            with contextlib.suppress(KeyError):
                CREDENTIAL_READY.remove(namespace, name, previous)
        _ready_reasons[(namespace, name)] = reason
        CREDENTIAL_READY.labels(namespace=namespace, name=name, reason=reason).set(1 if ready else 0)


def mfa_session_created(identity: str, expiration_timestamp: float) -> None:
    MFA_SESSION_EXPIRATION.labels(identity=identity).set(expiration_timestamp)


def mfa_session_forgotten(identity: str) -> None:
    with contextlib.suppress(KeyError):
        MFA_SESSION_EXPIRATION.remove(identity)


def record_build_info() -> None:
    from vault_sts_operator import __version__  # late: metrics is imported by the package's modules

    BUILD_INFO.labels(version=__version__, python_version=platform.python_version()).set(1)


def forget_credential(namespace: str, name: str) -> None:
    """Drop the per-credential series of a deleted AssumedRoleCredential."""
    with contextlib.suppress(KeyError):
        RENEWAL_TIMESTAMP.remove(namespace, name)
    with _ready_lock:
        reason = _ready_reasons.pop((namespace, name), None)
        if reason is not None:
            with contextlib.suppress(KeyError):
                CREDENTIAL_READY.remove(namespace, name, reason)


class CredentialExpiry(Collector):
    """The two per-credential series, computed at scrape time from the scheduler's own record of each
    credential's expiry (one float each). Two Gauge children per credential cost about 1.4 KB, 14 MB
    at ten thousand; a deleted credential's series go with it from the scheduler."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, str, float]]] = lambda: ()

    def describe(self) -> Iterable[Metric]:
        return self._families()  # the names (no samples): the registry checks them and tools can list them

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
    record_build_info()
    if port:
        start_http_server(port, registry=registry)
