"""The whole Secret for one AssumedRoleCredential, built in one place (its only writer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.specs import CredentialSpec
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


def build_secret(
    *, spec: CredentialSpec, owner_uid: str, creds: TemporaryCredentials, record: IssuedRecord
) -> dict[str, Any]:
    """A complete Secret manifest: data, owner reference, owner labels, issue record."""
    labels = {**spec.target.labels, c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE, c.CREDENTIAL_LABEL: spec.name}
    annotations = {
        **spec.target.annotations,
        **record_annotations(record),
        c.SECRET_SOURCE_ANNOTATION: f"{spec.namespace}/{spec.name}",
    }
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
