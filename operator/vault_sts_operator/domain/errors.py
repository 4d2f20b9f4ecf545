"""Failures the issuing flow tells apart.

Each carries a condition reason and says whether retrying soon can help. Messages
are written by this package from non-secret facts only (ARNs, AWS error codes and
messages), never from a request that held a secret. `message` is tenant-visible
(status, Events) and names no Vault address, path or key; `detail` (the operator log,
and the platform admin's MFAIdentity status) may.
"""

from __future__ import annotations

from vault_sts_operator.domain import reasons


class IssuingError(Exception):
    """Base class: a credential could not be issued."""

    reason: str = reasons.VAULT_ERROR
    transient: bool = True

    def __init__(self, message: str, *, reason: str | None = None, transient: bool | None = None,
                 detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        if reason is not None:
            self.reason = reason
        if transient is not None:
            self.transient = transient


class InvalidSpecError(IssuingError):
    reason = reasons.INVALID_SPEC
    transient = False


class NotAllowedError(IssuingError):
    reason = reasons.NOT_ALLOWED
    transient = False


class IdentityNotFoundError(IssuingError):
    reason = reasons.IDENTITY_NOT_FOUND
    transient = False


class SecretConflictError(IssuingError):
    reason = reasons.SECRET_CONFLICT
    transient = False


class ServiceAccountConflictError(IssuingError):
    reason = reasons.SERVICE_ACCOUNT_CONFLICT
    transient = False


class SecretRefusedError(IssuingError):
    """The API server refused the Secret itself (400, 403, 413, 422): a configuration error (RBAC, an admission
    rule, a quota, a field it validates), not an outage. Retried after the configuration delay, or at once when
    the spec changes; credentials already issued for it are kept for that retry (services/reconciler.py)."""

    reason = reasons.SECRET_REFUSED
    transient = False


class VaultError(IssuingError):
    """Vault failed or refused; `reason` tells a missing path or a denied policy apart."""

    reason = reasons.VAULT_ERROR


class StsError(IssuingError):
    """STS refused or failed. `code_spent` is False when the request surely never reached STS."""

    reason = reasons.STS_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        transient: bool | None = None,
        code_spent: bool = True,
        detail: str = "",
    ) -> None:
        super().__init__(message, reason=reason, transient=transient, detail=detail)
        self.code_spent = code_spent


class MfaCodeRejectedError(StsError):
    """AWS refused the one-time code (already used, stale or wrong): wait for the next period."""

    reason = reasons.MFA_REJECTED
    transient = True


class SessionInvalidError(StsError):
    """The cached MFA session's credentials were refused (expired or revoked)."""

    reason = reasons.ACCESS_KEY_INVALID
    transient = True


class KubernetesError(IssuingError):
    reason = reasons.KUBERNETES_ERROR
