"""Which workloads a credential may restart: only those that opt in by naming it.

`rolloutRestartTargets` is written by whoever can create an AssumedRoleCredential; the restart is
done with the operator's rights. So a workload is restarted only when its own metadata carries
`vaultsts.io/restart-on-rotation: <credential>[,<credential>...]` naming the credential
(whoever can annotate the workload can restart it anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

RESTART_ON_ROTATION_ANNOTATION = "vaultsts.io/restart-on-rotation"


def opted_in(annotations: Mapping[str, str] | None, credential: str) -> bool:
    """Does the workload's `vaultsts.io/restart-on-rotation` list name `credential`?"""
    raw = (annotations or {}).get(RESTART_ON_ROTATION_ANNOTATION, "")
    return credential in {part.strip() for part in raw.split(",") if part.strip()}


def not_opted_in_message(kind: str, name: str, credential: str) -> str:
    return (f"{kind} {name} was not restarted: it does not opt in (add the annotation "
            f"{RESTART_ON_ROTATION_ANNOTATION}: {credential} to its metadata)")
