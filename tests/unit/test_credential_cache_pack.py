"""The credential cache holds each CR deflated (services/credential_cache.py `pack`): what a pass reads back is the
compact body exactly, and an issued credential's body is held in a fraction of its JSON."""

from __future__ import annotations

from typing import Any

from vault_sts_operator.services.credential_cache import CredentialCache, compact, pack, unpack


def issued(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"{name}-0cba-40f6-9280-eb8d2f5080b6",
                     "generation": 1, "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"durationSeconds": 3600, "identityRef": {"name": "prod"}, "mfa": "session",
                 "roleArn": "arn:aws:iam::123456789012:role/app-team-a"},
        "status": {
            "accessKeyId": "ASIABUEYNK44YKCSHSI7",
            "assumedRoleArn": f"arn:aws:sts::123456789012:assumed-role/app-team-a/team-a@{name}",
            "conditions": [{"lastTransitionTime": "2026-12-04T18:10:17Z", "observedGeneration": 1,
                            "message": "issued ASIABUEYNK44YKCSHSI7 for arn:aws:iam::123456789012:role/app-team-a "
                                       f"into Secret {name} (no Secret issued yet); expires 2026-12-04T19:10:17Z",
                            "reason": "Issued", "status": "True", "type": "Ready"}],
            "expiration": "2026-12-04T19:10:17Z", "issuedAt": "2026-12-04T18:10:17Z", "observedGeneration": 1,
            "renewalTime": "2026-12-04T18:50:01Z", "secretName": name},
    }


def test_a_packed_body_reads_back_exactly_and_is_held_in_under_a_third_of_its_json() -> None:
    cache = CredentialCache()
    body = issued("app")
    small, raw = compact(body)
    assert unpack(pack(raw)) == raw
    cache.store(("team-a", "app"), body)
    cached = cache.get(("team-a", "app"))
    assert cached is not None
    assert cache.body(cached) == small
    assert len(cached.raw) < len(raw) / 3, (len(cached.raw), len(raw))


def test_the_status_a_pass_wrote_is_merged_into_the_packed_body() -> None:
    cache = CredentialCache()
    cache.store(("team-a", "app"), issued("app"))
    cached = cache.get(("team-a", "app"))
    assert cached is not None
    cache.passed(("team-a", "app"), cached, failures=0, reason="Issued", renewal=None, secret=None,
                 status={"renewalTime": "2026-12-04T18:55:00Z"})
    held = cache.body(cached)
    assert held["status"]["renewalTime"] == "2026-12-04T18:55:00Z"
    assert held["status"]["accessKeyId"] == "ASIABUEYNK44YKCSHSI7"
