"""STS access through boto3, and the mapping of AWS's answers to the failures the flow tells apart.

Calls that carry a TOTP code use a client with botocore's retries off: a retried
request would send the same code twice. Clients are built once per credentials
and reused; building them is serialised (botocore sessions are not thread-safe).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from vault_sts_operator import metrics
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.credentials import AccessKey, TemporaryCredentials
from vault_sts_operator.domain.errors import MfaCodeRejectedError, SessionInvalidError, StsError

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient
else:
    STSClient = Any

log = logging.getLogger(__name__)

_INVALID_CODE = "invalid MFA one time pass code"
# The caller in AWS's messages ("User: arn:aws:iam::123456789012:user/ops is not authorized ..."): every tenant
# reaches STS as the identity's IAM user, whose ARN is the platform's, not the tenant's to read. Role ARNs (what
# the tenant asked for) stay.
_CALLER_ARN = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::\d{12}:(?:user|assumed-role|federated-user)/\S*")
_BAD_SERIAL = "unable to validate MFA code"


@dataclass(frozen=True)
class AssumeRoleRequest:
    role_arn: str
    session_name: str
    duration_seconds: int
    external_id: str = ""
    policy: str = ""
    policy_arns: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    source_identity: str = ""


def classify(exc: Exception, action: str, *, with_session: bool = False) -> StsError:
    """Turn a botocore failure into the flow's error, with a message free of secrets."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code, message = str(err.get("Code", "")), str(err.get("Message", ""))[:400]
        detail = f"STS {action}: {code}: {message}"  # the operator log: the caller's ARN too
        text = f"STS {action}: {code}: " + _CALLER_ARN.sub("the identity's IAM user", message)
        if code == "AccessDenied" and _INVALID_CODE in message:
            return MfaCodeRejectedError(text, detail=detail)
        if code == "AccessDenied" and _BAD_SERIAL in message:
            return StsError(text, reason=reasons.MFA_DEVICE_INVALID, transient=False, detail=detail)
        if code == "AccessDenied":
            return StsError(text, reason=reasons.ACCESS_DENIED, transient=False, detail=detail)
        if code in ("ExpiredToken", "InvalidClientTokenId", "SignatureDoesNotMatch"):
            if with_session:
                return SessionInvalidError(text, detail=detail)
            return StsError(text, reason=reasons.ACCESS_KEY_INVALID, transient=False, detail=detail)
        if code == "ValidationError" and "DurationSeconds" in message:
            return StsError(text, reason=reasons.INVALID_DURATION, transient=False, detail=detail)
        if code in ("ValidationError", "MalformedPolicyDocument", "PackedPolicyTooLarge", "RegionDisabledException"):
            return StsError(text, reason=reasons.INVALID_SPEC, transient=False, detail=detail)
        if code in ("Throttling", "ThrottlingException", "RequestLimitExceeded"):
            return StsError(text, reason=reasons.THROTTLED, code_spent=False, detail=detail)
        return StsError(text, reason=reasons.STS_UNAVAILABLE, detail=detail)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        # The request never left: a code carried by it is still unspent.
        return StsError(f"STS {action}: endpoint unreachable ({type(exc).__name__})", code_spent=False)
    return StsError(f"STS {action}: {type(exc).__name__}")


class StsGateway:
    """Makes the three STS calls the flow needs, for any credentials and endpoint."""

    def __init__(self, *, connect_timeout: float = 5, read_timeout: float = 20, max_pool: int = 32,
                 max_clients: int = 64) -> None:
        self._session = boto3.session.Session()
        self._build_lock = threading.Lock()
        # Bounded: MFA sessions and keys are replaced over time; old clients must not pile up.
        self._clients: OrderedDict[tuple[str, str, str, bool], STSClient] = OrderedDict()
        self._max_clients = max_clients
        # botocore's retries["max_attempts"] counts retries, not attempts: {"max_attempts": 1} sent a
        # code-carrying request twice. "total_max_attempts" counts the initial request.
        self._no_retry = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_pool_connections=max_pool)
        self._retrying = botocore.config.Config(
            # One quick retry at most: the reconciler's own backoff (with jitter) paces further passes.
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_pool_connections=max_pool)

    def _client(self, region: str, endpoint: str, key_id: str, secret: str, token: str | None,
                *, carries_code: bool) -> STSClient:
        cache_key = (region, endpoint, key_id, carries_code)
        with self._build_lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = self._session.client(
                    "sts", region_name=region, endpoint_url=endpoint or None,
                    aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token,
                    config=self._no_retry if carries_code else self._retrying)
                self._clients[cache_key] = client
                while len(self._clients) > self._max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(cache_key)
        return client

    def forget(self, access_key_id: str) -> None:
        """Drop clients built for credentials that are no longer used."""
        with self._build_lock:
            for key in [k for k in self._clients if k[2] == access_key_id]:
                del self._clients[key]

    def _timed(self, action: str, call: Callable[[], Mapping[str, Any]], *, with_session: bool = False
               ) -> Mapping[str, Any]:
        started = time.perf_counter()
        try:
            response = call()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = classify(exc, action, with_session=with_session)
            metrics.STS_CALLS.labels(action=action, outcome=error.reason).inc()
            raise error from None
        finally:
            metrics.STS_LATENCY.labels(action=action).observe(time.perf_counter() - started)
        metrics.STS_CALLS.labels(action=action, outcome="ok").inc()
        return response

    def get_session_token(self, *, region: str, endpoint: str, key: AccessKey, serial: str, code: str,
                          duration_seconds: int) -> TemporaryCredentials:
        client = self._client(region, endpoint, key.access_key_id, key.secret_access_key, None, carries_code=True)
        response = self._timed("GetSessionToken", lambda: client.get_session_token(
            DurationSeconds=duration_seconds, SerialNumber=serial, TokenCode=code))
        return _temporary(response["Credentials"], "")

    def assume_role(self, *, region: str, endpoint: str, key_id: str, secret: str, token: str | None,
                    request: AssumeRoleRequest, serial: str = "", code: str = "") -> TemporaryCredentials:
        carries_code = bool(code)
        client = self._client(region, endpoint, key_id, secret, token, carries_code=carries_code)
        params: dict[str, Any] = {"RoleArn": request.role_arn, "RoleSessionName": request.session_name,
                                  "DurationSeconds": request.duration_seconds}
        if request.external_id:
            params["ExternalId"] = request.external_id
        if request.policy:
            params["Policy"] = request.policy
        if request.policy_arns:
            params["PolicyArns"] = [{"arn": a} for a in request.policy_arns]
        if request.tags:
            params["Tags"] = [{"Key": k, "Value": v} for k, v in request.tags]
        if request.transitive_tag_keys:
            params["TransitiveTagKeys"] = list(request.transitive_tag_keys)
        if request.source_identity:
            params["SourceIdentity"] = request.source_identity
        if carries_code:
            params["SerialNumber"], params["TokenCode"] = serial, code
        response = self._timed("AssumeRole", lambda: client.assume_role(**params),
                               with_session=token is not None)
        return _temporary(response["Credentials"], str(response.get("AssumedRoleUser", {}).get("Arn", "")))


def _temporary(raw: Mapping[str, Any], arn: str) -> TemporaryCredentials:
    # botocore's timestamps carry dateutil's tzutc (or tzlocal): the same instant in datetime.UTC, converted once,
    # spares each later format_time a slow dateutil offset lookup (benchmarks/FINDINGS.md, "Issue 18, CPU").
    return TemporaryCredentials(access_key_id=raw["AccessKeyId"], secret_access_key=raw["SecretAccessKey"],
                                session_token=raw["SessionToken"], expiration=raw["Expiration"].astimezone(UTC),
                                assumed_role_arn=arn)
