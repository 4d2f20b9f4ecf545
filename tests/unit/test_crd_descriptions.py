"""CRDs that explain themselves (issue 19): every field of both CRDs carries a description for `kubectl explain`,
every CEL rule says which field it is about and why it refused, and status.conditions is shaped as
metav1.Condition so the conditions the operator writes are validated as Kubernetes' own are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from vault_sts_operator.api.conditions import set_condition
from vault_sts_operator.domain import reasons

ROOT = Path(__file__).resolve().parents[2]
CRDS = {path.name: yaml.safe_load(path.read_text()) for path in sorted((ROOT / "crds").glob("*.yaml"))}
ARC = "vaultsts.io_assumedrolecredentials.yaml"
MFAID = "vaultsts.io_mfaidentities.yaml"
# Kubernetes documents these itself (the API server publishes their descriptions for every kind): the CRD's
# copies stay bare, as controller-gen leaves them.
KUBERNETES_DOCUMENTED = {"apiVersion", "kind", "metadata"}
RULE_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
# metav1.Condition as controller-gen renders it (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
CONDITION_TYPE_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def schema_of(crd_name: str) -> dict[str, Any]:
    [version] = CRDS[crd_name]["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `schema` with its path: properties, array items ([]) and map values ({})."""
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{name}" if path else name, sub
        yield from nodes(sub, f"{path}.{name}" if path else name)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        sub = schema.get(key)
        if isinstance(sub, dict):
            yield path + suffix, sub
            yield from nodes(sub, path + suffix)


def test_both_crds_are_here() -> None:
    assert sorted(CRDS) == [ARC, MFAID]


@pytest.mark.parametrize("crd_name", [ARC, MFAID])
def test_every_field_has_a_description(crd_name: str) -> None:
    schema = schema_of(crd_name)
    assert str(schema.get("description") or "").strip(), f"{crd_name}: the kind itself has no description"
    walked = list(nodes(schema))
    missing = [path for path, node in walked
               if path not in KUBERNETES_DOCUMENTED and not str(node.get("description") or "").strip()]
    assert not missing, f"{crd_name}: {len(missing)} of {len(walked)} fields lack a description: {missing}"
    # The walk reaches nested objects, array items' properties and map values (it would pass vacuously otherwise).
    paths = {path for path, _ in walked}
    assert {"spec", "status", "status.conditions[].reason"} <= paths
    if crd_name == ARC:
        assert {"spec.identityRef.name", "spec.rolloutRestartTargets[].kind", "spec.tags{}"} <= paths
    else:
        assert {"spec.vault.auth.appRole.secretIdRef.key", "spec.externalId.byNamespace{}"} <= paths


def test_the_walk_names_a_field_that_lacks_a_description() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "description": "d", "properties": {
        "list": {"type": "array", "description": "d", "items": {"type": "object", "description": "d", "properties": {
            "bare": {"type": "string"}}}}}}}}
    missing = [path for path, node in nodes(schema) if not node.get("description")]
    assert missing == ["spec.list[].bare"]


def rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path of the node holding the rule, that node, the rule) for every x-kubernetes-validations rule."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, schema, rule
    for sub_path, sub in nodes(schema, path):
        for rule in sub.get("x-kubernetes-validations") or ():
            yield sub_path, sub, rule


@pytest.mark.parametrize("crd_name", [ARC, MFAID])
def test_every_cel_rule_has_a_message_a_reason_and_a_field_path_that_exists(crd_name: str) -> None:
    found = list(rules(schema_of(crd_name)))
    assert found
    for where, node, rule in found:
        assert str(rule.get("message") or "").strip(), (crd_name, where, rule["rule"])
        assert rule.get("reason") in RULE_REASONS, (crd_name, where, rule["rule"], rule.get("reason"))
        field_path = rule.get("fieldPath")
        if field_path is not None:  # a simple .a.b path below the node holding the rule
            target = node
            for part in field_path.lstrip(".").split("."):
                assert part in (target.get("properties") or {}), (crd_name, where, field_path)
                target = target["properties"][part]


def test_rules_about_one_field_name_it() -> None:
    arc = {rule["message"]: rule for _, _, rule in rules(schema_of(ARC))}
    mfaid = {rule["message"]: rule for _, _, rule in rules(schema_of(MFAID))}
    by_start = {message.split(" ")[0]: rule for message, rule in {**arc, **mfaid}.items()}
    assert by_start["durationSeconds"]["fieldPath"] == ".durationSeconds"
    assert by_start["renewBefore"]["fieldPath"] == ".renewBefore"
    assert by_start["spec.mfa"] == {**by_start["spec.mfa"], "fieldPath": ".mfa", "reason": "FieldValueRequired"}


EXPECTED_CONDITION_ITEM: dict[str, dict[str, Any]] = {
    "type": {"type": "string", "maxLength": 316, "pattern": CONDITION_TYPE_PATTERN},
    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
    "reason": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": CONDITION_REASON_PATTERN},
    "message": {"type": "string", "maxLength": 32768},
    "lastTransitionTime": {"type": "string", "format": "date-time"},
    "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
}


@pytest.mark.parametrize("crd_name", [ARC, MFAID])
def test_conditions_are_metav1_conditions(crd_name: str) -> None:
    conditions = schema_of(crd_name)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert sorted(item["required"]) == sorted(["type", "status", "lastTransitionTime", "reason", "message"])
    assert sorted(item["properties"]) == sorted(EXPECTED_CONDITION_ITEM)
    for name, expected in EXPECTED_CONDITION_ITEM.items():
        shape = {k: v for k, v in item["properties"][name].items() if k != "description"}
        assert shape == expected, (crd_name, name)


@pytest.mark.parametrize(("crd_name", "types"), [
    (ARC, ["Ready", "RotationFailing", "Reconciling", "Stalled"]),
    (MFAID, ["Ready", "Stalled"]),
])
def test_the_conditions_description_names_each_type(crd_name: str, types: list[str]) -> None:
    conditions = schema_of(crd_name)["properties"]["status"]["properties"]["conditions"]
    for type_ in types:
        assert re.search(rf"\b{type_}\b", conditions["description"]), (crd_name, type_)
        assert re.fullmatch(CONDITION_TYPE_PATTERN, type_)
        assert type_ in conditions["items"]["properties"]["type"]["description"], (crd_name, type_)


def test_the_conditions_the_operator_writes_fit_the_schema() -> None:
    """set_condition is the one writer of conditions (api/conditions.py): each reason it may be given fits the
    schema's pattern, and what it writes has every required field, non-empty."""
    item = schema_of(ARC)["properties"]["status"]["properties"]["conditions"]["items"]
    names = [name for name in dir(reasons) if name.isupper() and isinstance(getattr(reasons, name), str)]
    assert len(names) > 10
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    for name in names:
        reason = getattr(reasons, name)
        assert re.fullmatch(CONDITION_REASON_PATTERN, reason), name
        [written] = set_condition(None, type_=reasons.READY, status=False, reason=reason, message="m",
                                  generation=3, now=now)
        assert all(written.get(key) not in (None, "") for key in item["required"]), written
        assert written["status"] in item["properties"]["status"]["enum"]
        assert re.fullmatch(CONDITION_TYPE_PATTERN, written["type"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", written["lastTransitionTime"])


def test_credential_status_has_the_retry_fields() -> None:
    status = schema_of(ARC)["properties"]["status"]["properties"]
    assert {k: v for k, v in status["failedAttempts"].items() if k != "description"} == \
        {"type": "integer", "format": "int64", "minimum": 0}
    for name in ("lastFailureTime", "nextRetryTime"):
        shape = {k: v for k, v in status[name].items() if k != "description"}
        assert shape == {"type": "string", "format": "date-time"}, name


@pytest.mark.parametrize("crd_name", [ARC, MFAID])
def test_the_ready_message_is_a_wide_column(crd_name: str) -> None:
    [version] = CRDS[crd_name]["spec"]["versions"]
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Message"] == {"name": "Message", "type": "string", "priority": 1,
                                  "jsonPath": '.status.conditions[?(@.type=="Ready")].message'}
    assert columns["Reason"]["priority"] == 1 and "priority" not in columns["Ready"]
