"""Pure rendering of credentials into the Secret's data (the formats in DESIGN.md)."""

from __future__ import annotations

import json

from vault_sts_operator.api import constants as c
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.timefmt import format_time


def credentials_file(creds: TemporaryCredentials, profile: str) -> str:
    """An AWS shared credentials file with one profile."""
    return (
        f"[{profile}]\n"
        f"aws_access_key_id = {creds.access_key_id}\n"
        f"aws_secret_access_key = {creds.secret_access_key}\n"
        f"aws_session_token = {creds.session_token}\n"
    )


def credential_process_json(creds: TemporaryCredentials) -> str:
    """The JSON a `credential_process` prints (Version 1), so SDKs refresh by themselves."""
    return json.dumps(
        {
            "Version": 1,
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key,
            "SessionToken": creds.session_token,
            "Expiration": format_time(creds.expiration),
        }
    )


def render_secret_data(creds: TemporaryCredentials, profile: str) -> dict[str, str]:
    """Every key of the Secret, as text (stringData)."""
    return {
        c.KEY_ACCESS_KEY_ID: creds.access_key_id,
        c.KEY_SECRET_ACCESS_KEY: creds.secret_access_key,
        c.KEY_SESSION_TOKEN: creds.session_token,
        c.KEY_EXPIRATION: format_time(creds.expiration),
        c.KEY_CREDENTIALS_FILE: credentials_file(creds, profile),
        c.KEY_CREDENTIAL_PROCESS: credential_process_json(creds),
    }
