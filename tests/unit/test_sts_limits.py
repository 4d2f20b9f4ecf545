"""One tenant cannot take the operator down, nor make it spend anything on a request STS would refuse (issue 17,
items 4 and 5): STS's limits checked in pure code (domain/sts_limits.py) and by parse_credential, the CRD's
schema bounding everything a tenant can make large, and the controller's cache bounded per credential."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from vault_sts_operator.api.specs import parse_credential
from vault_sts_operator.domain import sts_limits as limits
from vault_sts_operator.domain.errors import InvalidSpecError
from vault_sts_operator.services.controller import CredentialController
from vault_sts_operator.services.credential_cache import MAX_ROTATE_VALUE, bounded_rotate
from vault_sts_operator.services.credential_cache import compact as compacted
from vault_sts_operator.services.reconciler import CredentialReconciler, PassResult

ROOT = Path(__file__).resolve().parents[2]
ROLE = "arn:aws:iam::123456789012:role/app-billing"


# --- the pure checks ---------------------------------------------------------------------------------------------

def test_tags_at_stss_limits_pass_and_one_over_fails() -> None:
    fine = [("k" * 128, "v" * 256), ("Team Ümlaut 日本 ٣", "a_b.c:d/e=f+g-h@i "), ("empty", "")]
    assert limits.tag_problems(fine) == []
    assert limits.tag_problems([(f"k{i}", "v") for i in range(48)]) == []
    [problem] = limits.tag_problems([(f"k{i}", "v") for i in range(49)])
    assert "49 tags; at most 48" in problem and "50 per session" in problem


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("", "v", "key '' is 0 characters; STS takes 1-128"),
    ("k" * 129, "v", "key #1 is 129 characters"),
    ("bad!key", "v", "key #1 has a character STS refuses"),
    ("tab\tkey", "v", "key #1 has a character STS refuses"),
    ("ok", "v" * 257, "the value of 'ok' is 257 characters; STS takes at most 256"),
    ("ok", "semi;colon", "the value of 'ok' has a character STS refuses"),
    ("ok", "new\nline", "the value of 'ok' has a character STS refuses"),
])
def test_tag_problems_name_the_key_and_the_limit(key: str, value: str, expected: str) -> None:
    [problem] = limits.tag_problems([(key, value)])
    assert expected in problem
    if value != "v" and len(value) > 1:
        assert value not in problem  # a value may be someone's secret: never echoed


def test_session_policy_must_be_a_json_object_of_at_most_2048_characters() -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                                 "Resource": "*"}]})
    assert limits.session_policy_problems("") == []
    assert limits.session_policy_problems(policy) == []
    padded = policy[:-1] + " " * (2048 - len(policy)) + "}"
    assert len(padded) == 2048 and limits.session_policy_problems(padded) == []
    [too_long] = limits.session_policy_problems(padded[:-1] + " }")
    assert "2049 characters; STS takes at most 2048" in too_long
    assert "not valid JSON" in limits.session_policy_problems("{'Version': 1}")[0]
    assert "must be a JSON object" in limits.session_policy_problems("[1, 2]")[0]
    assert "character STS refuses" in limits.session_policy_problems('{"a": "\u0101"}')[0]
    [deep] = limits.session_policy_problems("[" * 1020 + "]" * 1020)  # 2,040 characters: no crash, a problem
    assert "nests too deeply" in deep or "must be a JSON object" in deep


def test_policy_arns_at_most_ten_and_each_an_arn() -> None:
    arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    assert limits.policy_arn_problems([arn] * 10) == []
    assert limits.policy_arn_problems(["arn:aws-us-gov:iam::123456789012:policy/team/p"]) == []
    assert "11 entries; STS takes at most 10" in limits.policy_arn_problems([arn] * 11)[0]
    assert "policyArns[0] is not a managed policy ARN" in limits.policy_arn_problems(["arn:aws:s3:::bucket/x/y/z"])[0]
    assert "policyArns[1] is 2049 characters" in limits.policy_arn_problems([arn, arn + "x" * 2011])[0]


@pytest.mark.parametrize(("arn", "expected"), [
    (ROLE, None),
    ("arn:aws-cn:iam::123456789012:role/path/to/name+=,.@_-", None),
    ("arn:aws:iam::123456789012:role/", "not a role ARN"),
    ("arn:aws:iam::12345678901:role/short-account", "not a role ARN"),
    ("arn:aws:iam::123456789012:user/alice", "not a role ARN"),
    ("arn:aws:iam::123456789012:role/ünicode", "not a role ARN"),
    ("arn:aws:iam::1", "is 14 characters; an ARN has 20-2048"),
    ("arn:aws:iam::123456789012:role/" + "r" * 2100, "characters; an ARN has 20-2048"),
])
def test_role_arn_syntax(arn: str, expected: str | None) -> None:
    problems = limits.role_arn_problems(arn)
    assert (problems == []) if expected is None else expected in problems[0]


def test_session_name_leaves_room_for_the_namespace_prefix() -> None:
    assert limits.session_name_room("team-a") == 57  # 64 - len("team-a@")
    assert limits.session_name_problems("team-a", "x" * 57) == []
    assert limits.session_name_problems("team-a", "team-a@" + "x" * 57) == []  # the tenant wrote the prefix itself
    [problem] = limits.session_name_problems("team-a", "x" * 58)
    assert "58 characters" in problem and "at most 57 in this namespace" in problem
    assert "character STS refuses" in limits.session_name_problems("team-a", "has space")[0]
    assert limits.session_name_problems("team-a", "") == []  # the default (the credential's name) is cut instead


def test_external_id_charset_and_length() -> None:
    assert limits.external_id_problems("acme:team-a/x_1") == []
    assert "1 characters; STS takes 2-1224" in limits.external_id_problems("x")[0]
    assert "1225 characters" in limits.external_id_problems("x" * 1225)[0]
    assert "character STS refuses" in limits.external_id_problems("no spaces")[0]


def test_target_bounds_are_the_crds() -> None:
    ok = limits.target_problems(secret_name="s", profile="default",
                                labels={f"example.com/l{i}": "v" * 63 for i in range(32)},
                                annotations={f"a{i}": "x" * 4096 for i in range(32)}, restart_targets=20)
    assert ok == []
    problems = limits.target_problems(
        secret_name="s" * 254, profile="p" * 65, labels={"a": "not valid!", "b": "v" * 64, "-bad": "v"},
        annotations={f"a{i}": "x" * 4097 for i in range(33)}, restart_targets=21)
    text = "\n".join(problems)
    for expected in ("secretName is 254 characters; at most 253", "profile is 65 characters; at most 64",
                     "the value of 'a' is not a label value", "the value of 'b' is 64 characters; at most 63",
                     "key #3 is not a Kubernetes key", "target.annotations has 33 entries; at most 32",
                     "the value of 'a0' is 4097 characters; at most 4096", "rolloutRestartTargets has 21 entries"):
        assert expected in text, expected
    assert "not valid!" not in text


# --- parse_credential refuses before anything is read or sent ---------------------------------------------------

def spec(**fields: Any) -> dict[str, Any]:
    return {"identityRef": {"name": "ops"}, "roleArn": ROLE, **fields}


def test_parse_credential_accepts_a_spec_at_every_limit() -> None:
    cred = parse_credential("team-a", "billing", spec(
        roleSessionName="s" * 57, externalId="e" * 1224, policy='{"Version":"2012-10-17"}',
        policyArns=["arn:aws:iam::aws:policy/ReadOnlyAccess"] * 10, tags={f"k{i}": "v" * 256 for i in range(48)},
        target={"labels": {"app": "billing"}, "annotations": {"note": "x" * 4096}}))
    assert cred.role_session_name == "team-a@" + "s" * 57 and len(cred.role_session_name) == 64


@pytest.mark.parametrize(("fields", "expected"), [
    ({"tags": {"team": "a;b"}}, "spec.tags: the value of 'team' has a character STS refuses"),
    ({"tags": {f"k{i}": "v" for i in range(49)}}, "spec.tags has 49 tags"),
    ({"policy": "{not json"}, "spec.policy is not valid JSON"),
    ({"policy": "{" + " " * 2048 + "}"}, "spec.policy is 2050 characters"),
    ({"policyArns": ["arn:aws:iam::aws:policy/P"] * 11}, "spec.policyArns has 11 entries"),
    ({"roleArn": "arn:aws:iam::123456789012:user/alice"}, "spec.roleArn is not a role ARN"),
    ({"roleSessionName": "s" * 58}, "at most 57 in this namespace"),
    ({"externalId": "has space"}, "spec.externalId has a character STS refuses"),
    ({"target": {"annotations": {f"a{i}": "x" for i in range(33)}}}, "spec.target.annotations has 33 entries"),
    ({"target": {"labels": {"a": "not valid!"}}}, "spec.target.labels: the value of 'a' is not a label value"),
])
def test_parse_credential_refuses_what_sts_or_kubernetes_would(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidSpecError) as refused:
        parse_credential("team-a", "billing", spec(**fields))
    assert expected in refused.value.message
    assert refused.value.reason == "InvalidSpec"


def test_many_problems_make_a_short_condition() -> None:
    with pytest.raises(InvalidSpecError) as refused:
        parse_credential("team-a", "billing", spec(tags={f"k{i}!": "v" for i in range(48)}))
    assert refused.value.message.count("spec.tags") == 5 and refused.value.message.endswith("(and 43 more)")


# --- the CRD bounds everything a tenant can make large ------------------------------------------------------------

def crd_spec(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / name).read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def unbounded(schema: dict[str, Any], path: str = "spec") -> list[str]:
    """Every string without maxLength (or enum), array without maxItems and map without maxProperties."""
    found: list[str] = []
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema:
        found.append(path)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(path)
        found += unbounded(schema.get("items") or {}, path + "[]")
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(path)
            found += unbounded(extra, path + "{}")
        for key, sub in (schema.get("properties") or {}).items():
            found += unbounded(sub, f"{path}.{key}")
    return found


def test_every_field_of_a_credentials_spec_is_bounded() -> None:
    assert unbounded(crd_spec("vaultsts.io_assumedrolecredentials.yaml")) == []


def test_every_list_and_map_of_an_identity_is_bounded() -> None:
    assert [p for p in unbounded(crd_spec("vaultsts.io_mfaidentities.yaml")) if p.endswith(("[]", "{}")) or
            p in ("spec.allowedNamespaces", "spec.allowedRoleArns", "spec.sessionTags.tenantKeys",
                  "spec.externalId.byNamespace", "spec.allowedNamespaceSelector.matchLabels",
                  "spec.limits.mfaModes")] == []


def test_crd_limits_are_the_pure_modules() -> None:
    s = crd_spec("vaultsts.io_assumedrolecredentials.yaml")["properties"]
    target = s["target"]["properties"]
    assert s["tags"]["maxProperties"] == limits.MAX_TENANT_TAGS
    assert s["tags"]["additionalProperties"]["maxLength"] == limits.MAX_TAG_VALUE
    assert s["policy"]["maxLength"] == limits.MAX_POLICY
    assert s["policyArns"]["maxItems"] == limits.MAX_POLICY_ARNS
    assert (s["roleArn"]["minLength"], s["roleArn"]["maxLength"]) == (limits.MIN_ARN, limits.MAX_ARN)
    assert s["roleSessionName"]["maxLength"] == limits.MAX_SESSION_NAME - 2  # the shortest prefix: 'a@'
    assert s["externalId"]["maxLength"] == limits.MAX_EXTERNAL_ID
    assert s["rolloutRestartTargets"]["maxItems"] == limits.MAX_RESTART_TARGETS
    assert target["labels"]["maxProperties"] == limits.MAX_LABELS
    assert target["labels"]["additionalProperties"]["maxLength"] == limits.MAX_LABEL_VALUE
    assert target["annotations"]["maxProperties"] == limits.MAX_ANNOTATIONS
    assert target["annotations"]["additionalProperties"]["maxLength"] == limits.MAX_ANNOTATION_VALUE
    assert target["secretName"]["maxLength"] == limits.MAX_SECRET_NAME
    assert target["profile"]["maxLength"] == limits.MAX_PROFILE
    # Kubernetes allows 256 KiB of annotations in total: what the CRD lets a tenant ask for is well under it.
    assert limits.MAX_ANNOTATIONS * (limits.MAX_QUALIFIED_NAME + limits.MAX_ANNOTATION_VALUE) < 256 * 1024 * 0.6


def test_worst_case_ascii_spec_under_the_crd_fits_the_controllers_bound() -> None:
    worst = spec(
        identityRef={"name": "i" * 253}, roleArn="arn:aws:iam::123456789012:role/" + "r" * 512,
        roleSessionName="s" * 62, externalId="e" * 1224, policy="{" + '"' * 2046 + "}",
        policyArns=["p" * 2048] * 10, tags={f"{i:03d}" + "k" * 125: '"' * 256 for i in range(48)},
        durationSeconds=3600, mfa="session", renewBefore="9" * 31 + "s",
        target={"secretName": "n" * 253, "profile": "p" * 64,
                "labels": {f"{i:02d}" + "l" * 315: "v" * 63 for i in range(32)},
                "annotations": {f"{i:02d}" + "a" * 315: "x" * 4096 for i in range(32)}},
        rolloutRestartTargets=[{"kind": "StatefulSet", "name": "w" * 253}] * 20,
    )
    size = len(json.dumps(worst, separators=(",", ":"), ensure_ascii=False).encode())
    assert 200_000 < size < limits.MAX_SPEC_BYTES, size


# --- the controller holds a bounded record per credential ---------------------------------------------------------

class FakeReconciler:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def reconcile(self, body: dict[str, Any], resolve: Any, failures: int, **_: Any) -> PassResult:
        self.bodies.append(body)
        try:
            parse_credential(body["metadata"]["namespace"], body["metadata"]["name"], body["spec"])
        except InvalidSpecError as exc:
            return PassResult(600.0, failures=1, reason=exc.reason)
        return PassResult(60.0, failures=0, reason="Issued")


class NoIdentities:
    def resolve(self, name: str) -> Any:
        return None  # the fake reconciler resolves nothing


def huge(name: str, *, spec_annotations: int = 0, meta_annotations: int = 0, rotate: str | None = None
         ) -> dict[str, Any]:
    annotations = {f"tenant/n{i}": "x" * 100_000 for i in range(meta_annotations)}
    if rotate is not None:
        annotations["vaultsts.io/rotate"] = rotate
    return {"apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": 1,
                         "annotations": annotations, "managedFields": [{"f": "y" * 50_000}]},
            "spec": spec(target={"annotations": {f"a{i}": "z" * 100_000 for i in range(spec_annotations)}}),
            "status": {}}


def test_compact_keeps_what_a_pass_needs_and_nothing_of_a_large_metadata() -> None:
    compact, raw = compacted(huge("a", meta_annotations=10, rotate="now"))
    assert len(raw) < 1000
    assert compact["metadata"]["annotations"] == {"vaultsts.io/rotate": "now"}
    assert compact["spec"]["roleArn"] == ROLE
    assert json.loads(raw) == compact


def test_a_spec_larger_than_the_bound_becomes_a_marker() -> None:
    compact, raw = compacted(huge("a", spec_annotations=4))  # 400 KB of target.annotations: more than the CRD allows
    assert len(raw) < 1000
    assert list(compact["spec"]) == [limits.OVERSIZED_SPEC] and compact["spec"][limits.OVERSIZED_SPEC] > 400_000
    with pytest.raises(InvalidSpecError) as refused:
        parse_credential("team", "a", compact["spec"])
    assert refused.value.reason == "InvalidSpec" and "make target.annotations or target.labels smaller" in \
        refused.value.message
    _, kept = compacted(huge("b", spec_annotations=3))  # 300 KB: under the bound, kept (and refused by its checks)
    assert len(kept) > 300_000


def test_a_long_rotate_value_is_kept_as_its_hash() -> None:
    assert bounded_rotate(None) is None
    assert bounded_rotate("2024-05-01T10:00:00Z") == "2024-05-01T10:00:00Z"
    assert bounded_rotate("r" * MAX_ROTATE_VALUE) == "r" * MAX_ROTATE_VALUE
    long_a, long_b = bounded_rotate("r" * 200_000), bounded_rotate("r" * 199_999 + "s")
    assert long_a is not None and long_a.startswith("sha256:") and len(long_a) == 71
    assert long_a != long_b and long_a == bounded_rotate("r" * 200_000)  # a new value is still a new request
    _, raw = compacted(huge("a", rotate="r" * 200_000))
    assert len(raw) < 1000


def test_the_controllers_memory_per_credential_is_bounded_and_an_oversized_one_fails_as_invalid_spec() -> None:
    async def scenario() -> tuple[int, FakeReconciler, CredentialController]:
        reconciler = FakeReconciler()
        controller = CredentialController(reconciler=cast(CredentialReconciler, reconciler), kube=cast(Any, None),
                                          identities=NoIdentities(), workers=1)
        controller.scheduler.pause()
        for i in range(20):
            controller.observe(huge(f"c{i}", spec_annotations=5, meta_annotations=5, rotate="r" * 100_000), None)
        held = sum(len(cached.raw) + len(cached.identity) for _, cached in controller.cache.items())
        await controller._pass(("team", "c0"))
        return held, reconciler, controller

    held, reconciler, controller = asyncio.run(scenario())
    assert held < 20 * 1000  # 20 objects of 1.3 MB each, held in under 20 KB
    [body] = reconciler.bodies
    assert limits.OVERSIZED_SPEC in body["spec"]
    c0 = controller.cache.get(("team", "c0"))
    assert c0 is not None and c0.reason == "InvalidSpec" and c0.ready is False
