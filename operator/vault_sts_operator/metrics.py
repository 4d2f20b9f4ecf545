"""Prometheus metrics. Labels carry names and reasons, never a secret value."""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

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
ACTIVE = Gauge(f"{_NS}_active",
               "1 while this replica runs credential passes, 0 while it stands by (another replica leads)")
ROLLOUT_RESTARTS = Counter(f"{_NS}_rollout_restarts_total", "Workloads restarted after a rotation", ["kind"])
ROLLOUT_RESTARTS_REFUSED = Counter(f"{_NS}_rollout_restarts_refused_total",
                                   "Rollout restarts not done: the workload does not opt in", ["kind"])
MFA_SESSION_EXPIRATION = Gauge(
    f"{_NS}_mfa_session_expiration_timestamp_seconds",
    "Unix time at which the identity's cached MFA session (GetSessionToken) expires", ["identity"])
POD_IDENTITY_REQUESTS = Counter(f"{_NS}_pod_identity_requests_total",
                                "Node agents' requests for pods' credentials, by result (Granted or the refusal code)",
                                ["result"])
POD_IDENTITY_SECONDS = Histogram(f"{_NS}_pod_identity_request_seconds",
                                 "Time to answer a node agent's request for a pod's credentials",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
TOKEN_REVIEWS = Counter(f"{_NS}_token_reviews_total", "TokenReviews of Pod Identity tokens, by kind (agent, pod) "
                        "and whether the answer came from the 60-second cache", ["kind", "cached"])
BUILD_INFO = Gauge(f"{_NS}_build_info", "Always 1; the labels say which build runs",
                   ["version", "python_version"])

def mfa_session_created(identity: str, expiration_timestamp: float) -> None:
    MFA_SESSION_EXPIRATION.labels(identity=identity).set(expiration_timestamp)


def mfa_session_forgotten(identity: str) -> None:
    with contextlib.suppress(KeyError):
        MFA_SESSION_EXPIRATION.remove(identity)


def record_build_info() -> None:
    from vault_sts_operator import __version__  # late: metrics is imported by the package's modules

    BUILD_INFO.labels(version=__version__, python_version=platform.python_version()).set(1)


class CredentialState(NamedTuple):
    """What the controller knows of one credential, for its series (None: not known yet)."""

    namespace: str
    name: str
    expiration: float | None  # Unix time its issued credentials expire
    ready: bool | None  # its Ready condition
    reason: str  # that condition's reason
    renewal: float | None  # Unix time of its next scheduled rotation


class CredentialSeries(Collector):
    """The per-credential series, computed at scrape time from the controller's own record of each
    credential (a few fields it keeps anyway). A Gauge child per series costs about 0.7 KB, four
    series 28 MB at ten thousand credentials; a deleted credential's series go with its record."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[CredentialState]] = lambda: ()

    def describe(self) -> Iterable[Metric]:
        return self._families()  # the names (no samples): the registry checks them and tools can list them

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(f"{_NS}_credential_seconds_until_expiry",
                              "Seconds until the issued credentials of a Secret expire", labels=["namespace", "name"]),
            GaugeMetricFamily(f"{_NS}_credential_expiration_timestamp_seconds",
                              "Unix time at which the credentials in a Secret expire (alert on this minus time())",
                              labels=["namespace", "name"]),
            GaugeMetricFamily(f"{_NS}_credential_ready_status",
                              "1 when the AssumedRoleCredential is Ready, 0 when not; reason is its Ready "
                              "condition's reason (one series per credential)", labels=["namespace", "name", "reason"]),
            GaugeMetricFamily(f"{_NS}_credential_renewal_timestamp_seconds",
                              "Unix time of the credential's next scheduled rotation", labels=["namespace", "name"]),
        ]

    def collect(self) -> Iterable[Metric]:
        """The four families, each with samples made one at a time while the exposition writes them: a scrape
        at ten thousand credentials holds no list of 40,000 samples (about 14 MB with their label dicts, which
        stayed in the process's heap after each scrape; benchmarks/FINDINGS.md, "Issue 18")."""
        until, stamp, ready, renewal = self._families()
        now = time.time()
        source = self.source

        def sample(family: Metric, value: Callable[[CredentialState], float | None], *,
                   reason: bool = False) -> _LazySamples:
            def rows() -> Iterator[Sample]:
                for state in source():
                    number = value(state)
                    if number is not None:
                        labels = {"namespace": state.namespace, "name": state.name}
                        if reason:
                            labels["reason"] = state.reason
                        yield Sample(family.name, labels, number)

            return _LazySamples(rows)

        until.samples = sample(until, lambda s: None if s.expiration is None else s.expiration - now)  # type: ignore[assignment]
        stamp.samples = sample(stamp, lambda s: s.expiration)  # type: ignore[assignment]
        ready.samples = sample(ready, lambda s: None if s.ready is None else 1.0 if s.ready else 0.0,  # type: ignore[assignment]
                               reason=True)
        renewal.samples = sample(renewal, lambda s: s.renewal)  # type: ignore[assignment]
        return [until, stamp, ready, renewal]


class _LazySamples:
    """A family's samples as the exposition iterates them (each iteration reads the source again)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Callable[[], Iterator[Sample]]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Sample]:
        return self._rows()


CREDENTIALS = CredentialSeries()
REGISTRY.register(CREDENTIALS)

# Served by services/metrics_server.py (HTTPS and a reviewed bearer token by default).
