"""STS errors as AWS reports them: code, message, HTTP status and fault type."""

from __future__ import annotations

from collections.abc import Sequence

MFA_INVALID_CODE = "MultiFactorAuthentication failed with invalid MFA one time pass code."
MFA_UNKNOWN_SERIAL = (
    "MultiFactorAuthentication failed, unable to validate MFA code. "
    "Please verify your MFA serial number is valid and associated with this user."
)
MFA_INCOMPLETE = (
    "MultiFactorAuthentication failed, must provide both MFA serial number and one time pass code."
)
EXCEEDS_MAX_SESSION = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
EXCEEDS_CHAINING = (
    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
)
INVALID_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
SESSION_CANNOT_GET_SESSION_TOKEN = "Cannot call GetSessionToken with session credentials"


class STSError(Exception):
    """An error the emulator returns in AWS's ``ErrorResponse`` shape."""

    def __init__(self, code: str, message: str, status: int, fault: str = "Sender") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.fault = fault
        self.caller_arn: str | None = None  # filled in once the caller is known, for logging


def access_denied(message: str) -> STSError:
    return STSError("AccessDenied", message, 403)


def not_authorized(caller_arn: str, role_arn: str, action: str = "sts:AssumeRole") -> STSError:
    return access_denied(f"User: {caller_arn} is not authorized to perform: {action} on resource: {role_arn}")


def validation_error(message: str) -> STSError:
    return STSError("ValidationError", message, 400)


def validation_errors(problems: Sequence[str]) -> STSError:
    """AWS's aggregated constraint message: ``N validation error(s) detected: a; b``."""
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    return validation_error(f"{count} validation {noun} detected: " + "; ".join(problems))


def invalid_client_token() -> STSError:
    return STSError("InvalidClientTokenId", INVALID_TOKEN, 403)


def expired_token() -> STSError:
    return STSError("ExpiredToken", EXPIRED_TOKEN, 400)


def signature_mismatch(message: str = SIGNATURE_MISMATCH) -> STSError:
    return STSError("SignatureDoesNotMatch", message, 403)


def incomplete_signature(message: str) -> STSError:
    return STSError("IncompleteSignature", message, 400)


def missing_authentication() -> STSError:
    return STSError("MissingAuthenticationToken", "Request is missing Authentication Token", 403)


def throttling() -> STSError:
    return STSError("Throttling", "Rate exceeded", 400)


def internal_failure(status: int = 500) -> STSError:
    if status == 503:
        return STSError("ServiceUnavailable", "Service Unavailable", 503, fault="Receiver")
    return STSError("InternalFailure", "An internal error has occurred", status, fault="Receiver")
