"""spec.delivery (Secret or PodIdentity) and limits.deliveryModes: the pure rules of domain/delivery.py and how
api/specs.py and domain/tenancy.py apply them (docs/design/pod-identity.md, section 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vault_sts_operator.api.specs import parse_credential, parse_tenant_policy
from vault_sts_operator.domain.delivery import (
    POD_IDENTITY,
    SECRET,
    Claim,
    DeliverySpec,
    agent_refresh_due,
    conflicts,
    container_credentials,
    delivery_problems,
    fingerprint,
    serving,
)
from vault_sts_operator.domain.errors import InvalidSpecError, NotAllowedError
from vault_sts_operator.domain.tenancy import TenantPolicy, session_parameters

ROLE = "arn:aws:iam::123456789012:role/app"


def _problems(delivery: DeliverySpec, **overrides: Any) -> list[str]:
    args: dict[str, Any] = {"duration_seconds": 3600, "renew_before": None, "has_target": False,
                            "has_restart_targets": False}
    args.update(overrides)
    return delivery_problems(delivery, **args)


def test_secret_mode_is_the_default_and_takes_no_service_accounts() -> None:
    assert _problems(DeliverySpec()) == []
    assert _problems(DeliverySpec(SECRET), has_target=True, has_restart_targets=True) == []
    assert _problems(DeliverySpec(SECRET, ("billing",))) == ["delivery.serviceAccounts is only for mode PodIdentity"]
    assert _problems(DeliverySpec("Sidecar")) == ["delivery.mode 'Sidecar' is not Secret or PodIdentity"]


def test_pod_identity_rules() -> None:
    assert _problems(DeliverySpec(POD_IDENTITY, ("billing", "billing-worker"))) == []
    assert _problems(DeliverySpec(POD_IDENTITY)) == [
        "delivery.serviceAccounts must name at least one ServiceAccount of this namespace"]
    assert "names a ServiceAccount twice" in " ".join(_problems(DeliverySpec(POD_IDENTITY, ("a", "a"))))
    assert "at most 32" in " ".join(_problems(DeliverySpec(POD_IDENTITY, tuple(f"sa{i}" for i in range(33)))))
    bad_name = _problems(DeliverySpec(POD_IDENTITY, ("ok", "Bad_Name")))
    assert "1 name(s) are not ServiceAccount names" in " ".join(bad_name)
    problems = _problems(DeliverySpec(POD_IDENTITY, ("billing",)), has_target=True, has_restart_targets=True,
                         duration_seconds=900, renew_before=timedelta(minutes=5))
    assert [p.split(" ")[0] for p in problems] == ["target", "rolloutRestartTargets", "durationSeconds", "renewBefore"]


def _spec(**extra: Any) -> dict[str, Any]:
    return {"identityRef": {"name": "ops"}, "roleArn": ROLE, **extra}


def test_parse_credential_reads_delivery_and_keeps_secret_hashes() -> None:
    plain = parse_credential("team-a", "billing", _spec())
    explicit = parse_credential("team-a", "billing", _spec(delivery={"mode": "Secret"}))
    assert plain.delivery == explicit.delivery == DeliverySpec()
    # Existing Secrets carry the issuance hash: naming the default mode must not reissue them.
    assert plain.issuance_hash() == explicit.issuance_hash()
    with pytest.raises(InvalidSpecError, match="serviceAccounts is only for mode PodIdentity"):
        parse_credential("team-a", "billing", _spec(delivery={"serviceAccounts": ["billing"]}))
    with pytest.raises(InvalidSpecError, match="must be a list"):
        parse_credential("team-a", "billing", _spec(delivery={"mode": "PodIdentity", "serviceAccounts": "billing"}))


def test_pod_identity_parses_and_keeps_its_own_bounds() -> None:
    spec = parse_credential("team-a", "billing", _spec(delivery={"mode": "PodIdentity",
                                                                 "serviceAccounts": ["billing"]}))
    assert spec.delivery == DeliverySpec(mode="PodIdentity", service_accounts=("billing",))
    assert not spec.delivery.writes_secret
    # The mode is part of what was issued: switching modes issues again.
    assert spec.issuance_hash() != parse_credential("team-a", "billing", _spec()).issuance_hash()
    with pytest.raises(InvalidSpecError, match="durationSeconds must be at least 1800"):
        parse_credential("team-a", "billing", _spec(durationSeconds=900,
                                                    delivery={"mode": "PodIdentity", "serviceAccounts": ["billing"]}))


def test_the_identity_decides_which_modes_its_tenants_use() -> None:
    assert parse_tenant_policy({}).delivery_modes == (SECRET, POD_IDENTITY)
    secrets_only = parse_tenant_policy({"limits": {"deliveryModes": ["Secret"]}})
    with pytest.raises(InvalidSpecError, match=r"limits\.deliveryModes: 'Both' is not Secret or PodIdentity"):
        parse_tenant_policy({"limits": {"deliveryModes": ["Both"]}})
    common: dict[str, Any] = {"identity": "ops", "namespace": "team-a", "name": "billing",
                              "requested_session_name": "", "tenant_tags": {}, "tenant_external_id": "",
                              "duration_seconds": 3600, "mfa_mode": "session"}
    assert session_parameters(secrets_only, **common).session_name == "team-a@billing"
    with pytest.raises(NotAllowedError, match=r"PodIdentity is not allowed by MFAIdentity 'ops' "
                                              r"\(limits.deliveryModes: Secret\)"):
        session_parameters(secrets_only, delivery_mode=POD_IDENTITY, **common)
    no_secrets = TenantPolicy(delivery_modes=(POD_IDENTITY,))
    with pytest.raises(NotAllowedError, match="Secret is not allowed"):
        session_parameters(no_secrets, **common)


def test_the_older_credential_serves_a_shared_service_account() -> None:
    old = Claim("a-old", "2026-12-01T00:00:00Z", ("billing", "web"))
    new = Claim("b-new", "2026-12-02T00:00:00Z", ("billing", "batch"))
    twin = Claim("a-twin", "2026-12-02T00:00:00Z", ("batch",))  # same second as b-new: the name decides
    served = serving([new, twin, old])
    assert served == {"billing": "a-old", "web": "a-old", "batch": "a-twin"}
    assert conflicts(new, served) == {"billing": "a-old", "batch": "a-twin"}
    assert conflicts(old, served) == {}


def test_fingerprint_and_the_protocol_answer() -> None:
    assert fingerprint("ASIAEXAMPLE") == fingerprint("ASIAEXAMPLE") != fingerprint("ASIAOTHER")
    assert len(fingerprint("ASIAEXAMPLE")) == 16 and "ASIA" not in fingerprint("ASIAEXAMPLE")
    expiry = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    answer = container_credentials(access_key_id="ASIAX", secret_access_key="s", session_token="t", expiration=expiry)
    assert answer == {"AccessKeyId": "ASIAX", "SecretAccessKey": "s", "Token": "t",
                      "Expiration": "2026-12-04T20:00:00Z"}
    assert not agent_refresh_due(expiry, expiry - timedelta(minutes=19))
    assert agent_refresh_due(expiry, expiry - timedelta(minutes=17))
