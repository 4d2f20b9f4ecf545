"""AWS Signature Version 4 verification (header-signed requests), stdlib only."""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from calendar import timegm
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import strptime
from urllib.parse import parse_qsl, quote

from . import errors

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 15 * 60
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminal: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminal}"


@dataclass(frozen=True)
class SignedRequest:
    """What the server received, as raw as possible."""

    method: str
    path: str  # raw (percent-encoded) path, without the query
    query: str  # raw query string
    headers: Mapping[str, str]  # lower-cased names; repeated headers joined with ","
    body: bytes


def parse_authorization(value: str) -> Authorization:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise errors.incomplete_signature(f"Unsupported AWS 'algorithm': '{algorithm}'")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)]
    if missing:
        raise errors.incomplete_signature(
            "Authorization header requires " + ", ".join(f"'{m}'" for m in missing) + " parameter."
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise errors.incomplete_signature(
            "Credential should be scoped to a valid region, not the empty string. "
            "Credential should have 5 slash-separated parts: AKID/date/region/service/aws4_request."
        )
    akid, date, region, service, terminal = scope
    return Authorization(
        access_key_id=akid,
        date=date,
        region=region,
        service=service,
        terminal=terminal,
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
    )


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_uri(raw_path: str) -> str:
    """botocore's form for non-S3 services: normalise the path, then encode it (again)."""
    path = raw_path or "/"
    normalised = posixpath.normpath(path)
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    if path.endswith("/") and normalised != "/":
        normalised += "/"
    return quote(normalised, safe="/~")


def canonical_query(raw_query: str) -> str:
    pairs = [
        (_uri_encode(key), _uri_encode(value))
        for key, value in parse_qsl(raw_query, keep_blank_values=True)
        if key != "X-Amz-Signature"
    ]
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _trim(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(headers: Mapping[str, str], signed: Sequence[str]) -> str:
    return "".join(f"{name}:{_trim(headers.get(name, ''))}\n" for name in signed)


def payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    declared = headers.get("x-amz-content-sha256")
    actual = hashlib.sha256(body).hexdigest()
    if declared is None:
        return actual
    if declared == UNSIGNED_PAYLOAD:
        return declared
    if declared != actual:
        raise errors.STSError(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            400,
        )
    return declared


def canonical_request(request: SignedRequest, signed_headers: Sequence[str]) -> str:
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.path),
            canonical_query(request.query),
            canonical_headers(request.headers, signed_headers),
            ";".join(signed_headers),
            payload_hash(request.headers, request.body),
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return "\n".join([ALGORITHM, amz_date, scope, digest])


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_access_key}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def compute_signature(request: SignedRequest, auth: Authorization, amz_date: str, secret: str) -> str:
    canonical = canonical_request(request, auth.signed_headers)
    to_sign = string_to_sign(amz_date, auth.scope, canonical)
    key = signing_key(secret, auth.date, auth.region, auth.service)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_timestamp(amz_date: str) -> float:
    return float(timegm(strptime(amz_date, TIMESTAMP_FORMAT)))


def request_timestamp(request: SignedRequest) -> str:
    amz_date = request.headers.get("x-amz-date")
    if not amz_date:
        raise errors.incomplete_signature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    try:
        parse_timestamp(amz_date)
    except ValueError:
        raise errors.incomplete_signature(f"Invalid X-Amz-Date '{amz_date}'") from None
    return amz_date


def check_shape(request: SignedRequest, auth: Authorization, now: float, service: str = "sts") -> str:
    """Checks that do not need the secret; returns the request's X-Amz-Date."""
    amz_date = request_timestamp(request)
    if auth.terminal != "aws4_request":
        raise errors.signature_mismatch(
            "Credential should be scoped with a valid terminator: 'aws4_request'."
        )
    if auth.service != service:
        raise errors.signature_mismatch(f"Credential should be scoped to correct service: '{service}'. ")
    if auth.date != amz_date[:8]:
        raise errors.signature_mismatch(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if "host" not in auth.signed_headers:
        raise errors.signature_mismatch("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    if list(auth.signed_headers) != sorted(auth.signed_headers):
        raise errors.signature_mismatch()
    skew = now - parse_timestamp(amz_date)
    if abs(skew) > MAX_SKEW_SECONDS:
        raise errors.signature_mismatch(
            f"Signature expired: {amz_date} is now earlier or later than the server time by more than "
            f"15 minutes (skew {int(skew)} s)."
        )
    return amz_date


def verify(request: SignedRequest, auth: Authorization, secret: str, now: float, service: str = "sts") -> None:
    """Raise ``STSError`` unless ``request`` is correctly signed with ``secret`` for ``service``."""
    amz_date = check_shape(request, auth, now, service)
    if not _HEX64.fullmatch(auth.signature):
        raise errors.signature_mismatch()
    expected = compute_signature(request, auth, amz_date, secret)
    if not hmac.compare_digest(expected, auth.signature):
        raise errors.signature_mismatch()
