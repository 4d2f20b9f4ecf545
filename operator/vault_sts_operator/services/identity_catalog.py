"""Every MFAIdentity as the identity watch last showed it: what a credential's pass resolves its identity from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vault_sts_operator.api.specs import IdentitySpec, parse_identity
from vault_sts_operator.config import OperatorConfig
from vault_sts_operator.domain.errors import IdentityNotFoundError
from vault_sts_operator.domain.object_meta import Key


class IdentityCatalog:
    def __init__(self, config: OperatorConfig, on_change: Callable[[str], None]) -> None:
        self._config = config
        self._on_change = on_change  # the identity appeared, changed its spec or went: its credentials re-decide
        self._specs: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (uid, spec)

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        if event_type == "DELETED":
            if self._specs.pop(name, None) is not None:
                self._on_change(name)
            return
        entry = (str(meta.get("uid")), dict(body.get("spec") or {}))
        if self._specs.get(name) != entry:  # (status-only updates change nothing here)
            self._specs[name] = entry
            self._on_change(name)  # during the first list no credential is known yet: a no-op

    def listed(self, seen: set[Key]) -> None:
        for name in [n for n in self._specs if ("", n) not in seen]:  # deleted while no watch was open
            del self._specs[name]
            self._on_change(name)

    def resolve(self, name: str) -> IdentitySpec:
        entry = self._specs.get(name)
        if entry is None:
            raise IdentityNotFoundError(f"MFAIdentity {name!r} does not exist")
        uid, spec = entry
        return parse_identity(name, uid, spec, default_vault=self._config.default_vault,
                              operator_namespace=self._config.lease_namespace, rules=self._config.connection_rules)
