"""The per-credential ready series: one per credential, replaced when the reason changes, gone on delete."""

from __future__ import annotations

from prometheus_client import REGISTRY

from vault_sts_operator import metrics


def ready_series(namespace: str, name: str) -> dict[str, float]:
    return {s.labels["reason"]: s.value for family in REGISTRY.collect() for s in family.samples
            if s.name == "vault_sts_operator_credential_ready_status"
            and s.labels["namespace"] == namespace and s.labels["name"] == name}


def test_one_series_per_credential_with_the_current_reason():
    metrics.credential_ready("unit-ns", "c1", ready=False, reason="NotAllowed")
    assert ready_series("unit-ns", "c1") == {"NotAllowed": 0.0}
    metrics.credential_ready("unit-ns", "c1", ready=True, reason="Issued")
    assert ready_series("unit-ns", "c1") == {"Issued": 1.0}
    metrics.RENEWAL_TIMESTAMP.labels(namespace="unit-ns", name="c1").set(5)
    metrics.forget_credential("unit-ns", "c1")
    assert ready_series("unit-ns", "c1") == {}
    assert not [s for f in REGISTRY.collect() for s in f.samples
                if s.name == "vault_sts_operator_credential_renewal_timestamp_seconds"
                and s.labels.get("name") == "c1" and s.labels.get("namespace") == "unit-ns"]


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
