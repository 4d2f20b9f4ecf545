"""The AWS Query protocol for STS: form parameters in, XML out (as botocore and aws-sdk-go v1 expect)."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from .errors import STSError
from .model import Credential, Principal
from .sts import AssumedRole

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
API_VERSION = "2011-06-15"


def parse_params(query: str, body: bytes, content_type: str) -> dict[str, str]:
    """Query-string parameters, overridden by form-encoded body parameters (last value wins)."""
    params: dict[str, str] = dict(parse_qsl(query, keep_blank_values=True))
    media = content_type.split(";", 1)[0].strip().lower()
    if body and media in ("", "application/x-www-form-urlencoded"):
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return params


def iso8601(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _el(name: str, value: str | int | None) -> str:
    return "" if value is None else f"<{name}>{escape(str(value))}</{name}>"


def _envelope(action: str, result: str, request_id: str) -> bytes:
    text = (
        f'<{action}Response xmlns="{NAMESPACE}">\n'
        f"  <{action}Result>\n{result}  </{action}Result>\n"
        f"  <ResponseMetadata>\n    <RequestId>{escape(request_id)}</RequestId>\n  </ResponseMetadata>\n"
        f"</{action}Response>\n"
    )
    return text.encode("utf-8")


def _credentials(cred: Credential) -> str:
    return (
        "    <Credentials>\n"
        f"      {_el('AccessKeyId', cred.access_key_id)}\n"
        f"      {_el('SecretAccessKey', cred.secret_access_key)}\n"
        f"      {_el('SessionToken', cred.session_token)}\n"
        f"      {_el('Expiration', iso8601(cred.expiration))}\n"
        "    </Credentials>\n"
    )


def render_assume_role(result: AssumedRole, request_id: str) -> bytes:
    body = ""
    if result.source_identity is not None:
        body += f"    {_el('SourceIdentity', result.source_identity)}\n"
    body += (
        "    <AssumedRoleUser>\n"
        f"      {_el('AssumedRoleId', result.assumed_role_id)}\n"
        f"      {_el('Arn', result.arn)}\n"
        "    </AssumedRoleUser>\n"
    )
    body += _credentials(result.credential)
    body += f"    {_el('PackedPolicySize', result.packed_policy_size)}\n"
    return _envelope("AssumeRole", body, request_id)


def render_get_session_token(cred: Credential, request_id: str) -> bytes:
    return _envelope("GetSessionToken", _credentials(cred), request_id)


def render_get_caller_identity(principal: Principal, request_id: str) -> bytes:
    body = (
        f"    {_el('Arn', principal.arn)}\n"
        f"    {_el('UserId', principal.user_id)}\n"
        f"    {_el('Account', principal.account)}\n"
    )
    return _envelope("GetCallerIdentity", body, request_id)


def render_error(error: STSError, request_id: str) -> bytes:
    text = (
        f'<ErrorResponse xmlns="{NAMESPACE}">\n'
        "  <Error>\n"
        f"    {_el('Type', error.fault)}\n"
        f"    {_el('Code', error.code)}\n"
        f"    {_el('Message', error.message)}\n"
        "  </Error>\n"
        f"  {_el('RequestId', request_id)}\n"
        "</ErrorResponse>\n"
    )
    return text.encode("utf-8")
