"""The issue record an operator writes on each Secret as annotations, and reads back."""

from __future__ import annotations

from collections.abc import Mapping

from vault_sts_operator.api import constants as c
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.domain.timefmt import format_time, parse_time


def record_annotations(record: IssuedRecord) -> dict[str, str]:
    """What the operator wrote on a Secret it issued (no secret values)."""
    return {
        c.SECRET_ISSUED_AT_ANNOTATION: format_time(record.issued_at),
        c.SECRET_EXPIRATION_ANNOTATION: format_time(record.expiration),
        c.SECRET_SPEC_HASH_ANNOTATION: record.spec_hash,
        c.SECRET_ROTATE_REQUEST_ANNOTATION: record.rotate_request,
        c.SECRET_ACCESS_KEY_ID_ANNOTATION: record.access_key_id,
        c.SECRET_ROLE_ANNOTATION: record.assumed_role_arn,
    }


def read_issued_record(annotations: Mapping[str, str] | None) -> IssuedRecord | None:
    """The record on a Secret, or None when it has none (or a damaged one)."""
    ann = annotations or {}
    try:
        return IssuedRecord(
            issued_at=parse_time(ann[c.SECRET_ISSUED_AT_ANNOTATION]),
            expiration=parse_time(ann[c.SECRET_EXPIRATION_ANNOTATION]),
            spec_hash=ann.get(c.SECRET_SPEC_HASH_ANNOTATION, ""),
            rotate_request=ann.get(c.SECRET_ROTATE_REQUEST_ANNOTATION, ""),
            access_key_id=ann.get(c.SECRET_ACCESS_KEY_ID_ANNOTATION, ""),
            assumed_role_arn=ann.get(c.SECRET_ROLE_ANNOTATION, ""),
        )
    except (KeyError, ValueError):
        return None
