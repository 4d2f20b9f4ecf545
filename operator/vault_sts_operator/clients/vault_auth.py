"""How the operator logs in to Vault: one strategy per auth method.

Strategies get their secret inputs (JWT, SecretID, token) from providers that
read them at login time, so nothing secret is kept longer than a login needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import hvac

SecretProvider = Callable[[], str]


@dataclass(frozen=True)
class Login:
    token: str = field(repr=False)
    ttl_seconds: float  # 0 = does not expire
    renewable: bool


class AuthStrategy(Protocol):
    @property
    def method(self) -> str: ...

    def login(self, client: hvac.Client) -> Login: ...


def _from_auth_response(response: dict[str, Any]) -> Login:
    auth = response["auth"]
    return Login(token=auth["client_token"], ttl_seconds=float(auth.get("lease_duration") or 0),
                 renewable=bool(auth.get("renewable")))


@dataclass(frozen=True)
class KubernetesLogin:
    role: str
    mount: str
    jwt: SecretProvider = field(repr=False)
    method: str = "kubernetes"

    def login(self, client: hvac.Client) -> Login:
        response = client.auth.kubernetes.login(role=self.role, jwt=self.jwt(), mount_point=self.mount,
                                                use_token=False)
        return _from_auth_response(response)


@dataclass(frozen=True)
class AppRoleLogin:
    role_id: str
    mount: str
    secret_id: SecretProvider = field(repr=False)
    method: str = "approle"

    def login(self, client: hvac.Client) -> Login:
        response = client.auth.approle.login(role_id=self.role_id, secret_id=self.secret_id(),
                                             mount_point=self.mount, use_token=False)
        return _from_auth_response(response)


@dataclass(frozen=True)
class TokenLogin:
    token: SecretProvider = field(repr=False)
    method: str = "token"

    def login(self, client: hvac.Client) -> Login:
        token = self.token().strip()
        client.token = token
        info = client.auth.token.lookup_self()["data"]
        return Login(token=token, ttl_seconds=float(info.get("ttl") or 0), renewable=bool(info.get("renewable")))


def file_reader(path: str) -> SecretProvider:
    """Reads a projected token file at each login (kubelet rotates it)."""

    def read() -> str:
        return Path(path).read_text().strip()

    return read
