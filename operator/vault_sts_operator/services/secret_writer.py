"""The only writer of credential Secrets: whole Secrets, owned by their CR, never someone else's."""

from __future__ import annotations

from typing import Any

from vault_sts_operator.api.specs import CredentialSpec
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.domain.errors import KubernetesError, SecretConflictError
from vault_sts_operator.outputs.secret_manifest import build_secret, owner_of


def ownership_problem(secret: dict[str, Any] | None, spec: CredentialSpec, owner_uid: str) -> str | None:
    """Why this operator must not write `secret` for `spec`, or None when it may."""
    if secret is None:
        return None
    owner = owner_of(secret.get("metadata") or {})
    where = f"Secret {spec.namespace}/{spec.target.secret_name}"
    if owner is None:
        return f"{where} exists and was not created by vault-sts-operator; it is left untouched"
    name, uid = owner
    if uid != owner_uid:
        return f"{where} belongs to AssumedRoleCredential {name!r}; choose another target.secretName"
    return None


class SecretWriter:
    def __init__(self, kube: KubeGateway) -> None:
        self._kube = kube

    async def read(self, spec: CredentialSpec, owner_uid: str) -> dict[str, Any] | None:
        """The current Secret, after checking it is ours to write (SecretConflictError otherwise)."""
        secret = await self._kube.get_secret(spec.namespace, spec.target.secret_name)
        problem = ownership_problem(secret, spec, owner_uid)
        if problem:
            raise SecretConflictError(problem)
        return secret

    async def write(self, *, spec: CredentialSpec, owner_uid: str, creds: TemporaryCredentials,
                    record: IssuedRecord, current: dict[str, Any] | None, verified: bool = True) -> dict[str, Any]:
        """Create the Secret, or replace `current` (only at its resourceVersion); returns what was written.

        A create that finds a Secret of that name (the caller did not read it first, or it appeared
        meanwhile) reads it, checks it is ours, and replaces it once. `verified=False`: `current` is
        what this process last wrote, not a fresh read; if the Secret changed or vanished since, it
        is read, checked and written once more.
        """
        manifest = build_secret(spec=spec, owner_uid=owner_uid, creds=creds, record=record)
        written = None
        if current is None:
            written = await self._kube.create_secret(manifest)
            if written is None:
                current, verified = await self.read(spec, owner_uid), True
        if written is None and current is not None:
            written = await self._kube.replace_secret(manifest, str(current["metadata"]["resourceVersion"]))
            if written is None and not verified:
                current = await self.read(spec, owner_uid)
                written = await (self._kube.create_secret(manifest) if current is None else
                                 self._kube.replace_secret(manifest, str(current["metadata"]["resourceVersion"])))
        if written is None:
            raise KubernetesError(f"Secret {spec.namespace}/{spec.target.secret_name} changed while it was "
                                  "being written; will retry")
        return written

    async def delete_previous(self, namespace: str, name: str, owner_uid: str) -> None:
        """Delete a Secret this CR wrote under a former target.secretName."""
        secret = await self._kube.get_secret(namespace, name)
        owner = owner_of((secret or {}).get("metadata") or {})
        if secret is not None and owner is not None and owner[1] == owner_uid:
            await self._kube.delete_secret(namespace, name, secret["metadata"]["uid"])
