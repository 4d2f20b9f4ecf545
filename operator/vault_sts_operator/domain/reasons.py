"""Condition reasons: constants a user can look up in the README's troubleshooting table."""

from typing import Final

# Condition types (domain/credential_status.py decides what each says)
READY: Final = "Ready"  # the Secret holds valid credentials issued for the current spec
ROTATION_FAILING: Final = "RotationFailing"  # the latest attempt to issue failed
# kstatus' abnormal-true conditions (sigs.k8s.io/cli-utils pkg/kstatus): present only while True
RECONCILING: Final = "Reconciling"  # work in progress: a first issue, a retry after a transient failure
STALLED: Final = "Stalled"  # no progress until the user fixes the configuration

# Ready=True
ISSUED: Final = "Issued"
VERIFIED: Final = "Verified"

# Ready=False with no failure yet, and Reconciling=True: the first issue is under way
ISSUING: Final = "Issuing"

# RotationFailing=False
SUCCEEDED: Final = "Succeeded"

# A failed attempt: RotationFailing=True with the reason (and Ready=False with it when no valid Secret is left).
# Configuration the user must fix (not retried quickly; Stalled=True)
INVALID_SPEC: Final = "InvalidSpec"
IDENTITY_NOT_FOUND: Final = "IdentityNotFound"
NOT_ALLOWED: Final = "NotAllowed"
SECRET_CONFLICT: Final = "SecretConflict"
# The API server refused to write the Secret (400, 403, 413, 422: validation, RBAC, admission, quota).
SECRET_REFUSED: Final = "SecretRefused"
# Mode PodIdentity: an older credential of the namespace serves one of the ServiceAccounts this one names.
SERVICE_ACCOUNT_CONFLICT: Final = "ServiceAccountConflict"
ACCESS_DENIED: Final = "AccessDenied"
MFA_DEVICE_INVALID: Final = "MFADeviceInvalid"
INVALID_DURATION: Final = "InvalidDuration"
ACCESS_KEY_INVALID: Final = "AccessKeyInvalid"
VAULT_PATH_NOT_FOUND: Final = "VaultPathNotFound"
VAULT_PERMISSION_DENIED: Final = "VaultPermissionDenied"

# Transient: retried with backoff (Reconciling=True)
VAULT_ERROR: Final = "VaultError"
MFA_REJECTED: Final = "MFARejected"
THROTTLED: Final = "Throttled"
STS_UNAVAILABLE: Final = "STSUnavailable"
KUBERNETES_ERROR: Final = "KubernetesError"

# The reasons of the group above: progress needs the user's action (Stalled=True).
USER_ACTION_REQUIRED: Final = frozenset({
    INVALID_SPEC, IDENTITY_NOT_FOUND, NOT_ALLOWED, SECRET_CONFLICT, SECRET_REFUSED, SERVICE_ACCOUNT_CONFLICT,
    ACCESS_DENIED,
    MFA_DEVICE_INVALID, INVALID_DURATION, ACCESS_KEY_INVALID, VAULT_PATH_NOT_FOUND, VAULT_PERMISSION_DENIED,
})

# Event reasons (Normal)
ROTATED: Final = "Rotated"
ROTATION_DEFERRED: Final = "RotationDeferred"
# Event reasons (Warning)
ROLLOUT_RESTART_FAILED: Final = "RolloutRestartFailed"
