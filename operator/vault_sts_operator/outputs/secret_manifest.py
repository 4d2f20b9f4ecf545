"""The whole Secret for one AssumedRoleCredential, built in one place (its only writer)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.specs import CredentialSpec
from vault_sts_operator.domain import object_meta
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.outputs.issued_record import record_annotations
from vault_sts_operator.outputs.secret_data import render_secret_data


def owner_reference(owner_uid: str, owner_name: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.CREDENTIAL_KIND,
        "name": owner_name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(spec: CredentialSpec) -> dict[str, str]:
    return {**spec.target.labels, c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE, c.CREDENTIAL_LABEL: spec.name}


def _own_annotations(spec: CredentialSpec, record: IssuedRecord) -> dict[str, str]:
    return {**record_annotations(record), c.SECRET_SOURCE_ANNOTATION: f"{spec.namespace}/{spec.name}"}


def build_secret(
    *, spec: CredentialSpec, owner_uid: str, creds: TemporaryCredentials, record: IssuedRecord
) -> dict[str, Any]:
    """A complete Secret manifest: data, owner reference, owner labels, issue record."""
    labels = _labels(spec)
    annotations = {**spec.target.annotations, **_own_annotations(spec, record)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": spec.target.secret_name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner_uid, spec.name)],
        },
        "stringData": render_secret_data(creds, spec.target.profile),
    }


def owner_of(secret_metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind/name, uid) of the AssumedRoleCredential controlling a Secret, if any."""
    for ref in secret_metadata.get("ownerReferences") or ():
        if ref.get("kind") == c.CREDENTIAL_KIND and str(ref.get("apiVersion", "")).startswith(c.GROUP):
            return str(ref.get("name")), str(ref.get("uid"))
    return None


# The largest values STS returns where the Secret holds them (AccessKeyId is documented up to 128 characters; a
# session token of a role session with tags and a policy is a few KB): the placeholders of `secret_problems`.
_MAX_ACCESS_KEY_ID = 128
_MAX_SESSION_TOKEN = 8192
_MAX_SECRET_ACCESS_KEY = 128


def secret_problems(spec: CredentialSpec, *, rotate_request: str, now: datetime) -> list[str]:
    """Why the API server would refuse every Secret a pass may write for `spec`, or [] (pure, no request).

    The Secret is built as `build_secret` builds it, with the largest credentials and issue record STS can lead
    to, and checked with apimachinery's rules: name, labels, annotations (the tenant's plus the operator's own,
    which take part of the 256 KiB), data size. What only the API server knows (admission webhooks, quotas, RBAC)
    is left to its answer (clients/kube.py: SecretRefusedError).
    """
    assumed_arn = "x" * (len(spec.role_arn) + len(spec.role_session_name) + 32)
    record = IssuedRecord(issued_at=now, expiration=now, spec_hash="x" * 16, rotate_request=rotate_request,
                          access_key_id="x" * _MAX_ACCESS_KEY_ID, assumed_role_arn=assumed_arn)
    creds = TemporaryCredentials(access_key_id="x" * _MAX_ACCESS_KEY_ID, secret_access_key="x" * _MAX_SECRET_ACCESS_KEY,
                                 session_token="x" * _MAX_SESSION_TOKEN, expiration=now, assumed_role_arn=assumed_arn)
    problems = []
    name_problem = object_meta.dns_subdomain_problem(spec.target.secret_name)
    if name_problem:
        problems.append(f"spec.target.secretName {name_problem}")
    own_labels = (c.MANAGED_BY_LABEL, c.CREDENTIAL_LABEL)  # the operator's, whatever the tenant says (_labels)
    problems += object_meta.label_problems({k: v for k, v in spec.target.labels.items() if k not in own_labels},
                                           "spec.target.labels")
    if object_meta.label_value_problem(spec.name):
        problems.append(f"the credential's name is {len(spec.name)} characters: the Secret's label "
                        f"{c.CREDENTIAL_LABEL} holds it, and a label value may have at most "
                        f"{object_meta.LABEL_VALUE_MAX}")
    own = _own_annotations(spec, record)
    tenant_annotations = {k: v for k, v in spec.target.annotations.items() if k not in own}
    problems += object_meta.annotation_problems(tenant_annotations, "spec.target.annotations",
                                                reserved=object_meta.annotations_size(own))
    data_problem = object_meta.data_size_problem(render_secret_data(creds, spec.target.profile).items(),
                                                 "spec.target.profile")
    if data_problem:
        problems.append(data_problem)
    return problems
