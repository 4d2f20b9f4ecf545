"""Names that form the public API: group, kinds, annotations, labels."""

from typing import Final

GROUP: Final = "vaultsts.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

IDENTITY_PLURAL: Final = "mfaidentities"
CREDENTIAL_KIND: Final = "AssumedRoleCredential"
CREDENTIAL_PLURAL: Final = "assumedrolecredentials"

# Set on an AssumedRoleCredential (any new value) to ask for an immediate rotation.
ROTATE_ANNOTATION: Final = f"{GROUP}/rotate"

# Annotations the operator writes on each Secret it owns: a restarted operator reads
# them to know what it already issued (never the secret values themselves).
SECRET_EXPIRATION_ANNOTATION: Final = f"{GROUP}/expiration"
SECRET_ISSUED_AT_ANNOTATION: Final = f"{GROUP}/issued-at"
SECRET_SPEC_HASH_ANNOTATION: Final = f"{GROUP}/spec-hash"
SECRET_ROTATE_REQUEST_ANNOTATION: Final = f"{GROUP}/rotate-request"
SECRET_SOURCE_ANNOTATION: Final = f"{GROUP}/source"
SECRET_ACCESS_KEY_ID_ANNOTATION: Final = f"{GROUP}/access-key-id"
SECRET_ROLE_ANNOTATION: Final = f"{GROUP}/assumed-role-arn"

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "vault-sts-operator"
CREDENTIAL_LABEL: Final = f"{GROUP}/credential"

# Pod-template annotation bumped on rollout-restart targets after a rotation.
RESTARTED_AT_ANNOTATION: Final = f"{GROUP}/restartedAt"

FINALIZER: Final = f"{GROUP}/kopf-finalizer"

# Secret data keys (DESIGN.md: "The Secret written for each AssumedRoleCredential").
KEY_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
KEY_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
KEY_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"
KEY_EXPIRATION: Final = "AWS_CREDENTIAL_EXPIRATION"
KEY_CREDENTIALS_FILE: Final = "credentials"
KEY_CREDENTIAL_PROCESS: Final = "credential_process.json"
