"""Condition reasons: constants a user can look up in the README's troubleshooting table."""

from typing import Final

READY: Final = "Ready"

# Ready=True
ISSUED: Final = "Issued"
VERIFIED: Final = "Verified"

# Ready=False, configuration the user must fix (not retried quickly)
INVALID_SPEC: Final = "InvalidSpec"
IDENTITY_NOT_FOUND: Final = "IdentityNotFound"
NOT_ALLOWED: Final = "NotAllowed"
SECRET_CONFLICT: Final = "SecretConflict"
# The API server refused to write the Secret (400, 403, 413, 422: validation, RBAC, admission, quota).
SECRET_REFUSED: Final = "SecretRefused"
ACCESS_DENIED: Final = "AccessDenied"
MFA_DEVICE_INVALID: Final = "MFADeviceInvalid"
INVALID_DURATION: Final = "InvalidDuration"
ACCESS_KEY_INVALID: Final = "AccessKeyInvalid"
VAULT_PATH_NOT_FOUND: Final = "VaultPathNotFound"
VAULT_PERMISSION_DENIED: Final = "VaultPermissionDenied"

# Ready=False, transient: retried with backoff
VAULT_ERROR: Final = "VaultError"
MFA_REJECTED: Final = "MFARejected"
THROTTLED: Final = "Throttled"
STS_UNAVAILABLE: Final = "STSUnavailable"
KUBERNETES_ERROR: Final = "KubernetesError"

# Event reasons (Normal)
ROTATED: Final = "Rotated"
ROTATION_DEFERRED: Final = "RotationDeferred"
# Event reasons (Warning)
ROLLOUT_RESTART_FAILED: Final = "RolloutRestartFailed"
