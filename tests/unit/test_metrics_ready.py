"""The per-credential series (ready, renewal, expiry): one each per credential the controller knows, rendered
at scrape time from its record; the ready series carries the current reason; a forgotten credential has none."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from vault_sts_operator import metrics


def series(registry: CollectorRegistry, metric: str, namespace: str, name: str) -> dict[str, float]:
    return {s.labels.get("reason", ""): s.value for family in registry.collect() for s in family.samples
            if s.name == metric and s.labels["namespace"] == namespace and s.labels["name"] == name}


def test_series_follow_the_record_and_go_with_it():
    registry = CollectorRegistry()
    collector = metrics.CredentialSeries()
    registry.register(collector)
    states = {("ns", "c1"): metrics.CredentialState("ns", "c1", None, False, "NotAllowed", None)}
    collector.source = lambda: list(states.values())
    ready = "vault_sts_operator_credential_ready_status"
    renewal = "vault_sts_operator_credential_renewal_timestamp_seconds"
    expiry = "vault_sts_operator_credential_expiration_timestamp_seconds"
    assert series(registry, ready, "ns", "c1") == {"NotAllowed": 0.0}
    assert series(registry, renewal, "ns", "c1") == {}  # not issued yet: no renewal, no expiry
    assert series(registry, expiry, "ns", "c1") == {}
    states[("ns", "c1")] = metrics.CredentialState("ns", "c1", 2000.0, True, "Issued", 1500.0)
    assert series(registry, ready, "ns", "c1") == {"Issued": 1.0}  # the old reason's series is gone
    assert series(registry, renewal, "ns", "c1") == {"": 1500.0}
    assert series(registry, expiry, "ns", "c1") == {"": 2000.0}
    del states[("ns", "c1")]
    assert not [s for family in registry.collect() for s in family.samples]


def test_mfa_session_expiry_is_set_and_forgotten():
    metrics.mfa_session_created("unit-identity", 1234.0)
    value = REGISTRY.get_sample_value("vault_sts_operator_mfa_session_expiration_timestamp_seconds",
                                      {"identity": "unit-identity"})
    assert value == 1234.0
    metrics.mfa_session_forgotten("unit-identity")
    assert REGISTRY.get_sample_value("vault_sts_operator_mfa_session_expiration_timestamp_seconds",
                                     {"identity": "unit-identity"}) is None


def test_build_info_names_the_version():
    from vault_sts_operator import __version__

    metrics.record_build_info()
    assert REGISTRY.get_sample_value("vault_sts_operator_build_info",
                                     {"version": __version__, "python_version": __import__("platform")
                                      .python_version()}) == 1.0
