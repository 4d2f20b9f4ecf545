"""Hands out ready Vault sessions: callers never see credentials or log in themselves.

Kubernetes auth presents a ServiceAccount JWT whose audience names one Vault only. The default Vault gets
the token the kubelet projects for the operator (the chart's `vault.auth.kubernetes.audience`); any other
Vault the platform allows gets a short-lived token from a TokenRequest whose audience is that Vault's
address (domain/destinations.py `vault_audience`). A token one Vault captured is then refused by the
others, whose roles require their own audience.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from vault_sts_operator.api.specs import AppRoleAuth, KubernetesAuth, SecretKeyRef, TokenAuth, VaultConnection
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.vault import VaultSession, ca_file_for
from vault_sts_operator.clients.vault_auth import (
    AppRoleLogin,
    AuthStrategy,
    KubernetesLogin,
    SecretProvider,
    TokenLogin,
    file_reader,
)
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.destinations import same_destination, vault_audience
from vault_sts_operator.domain.errors import VaultError

SECRET_READ_TIMEOUT = 30.0
# TokenRequest's shortest lifetime (the API server raises anything shorter to 10 minutes); a token is
# used again until 80 % of it has passed, as the kubelet refreshes projected tokens.
AUDIENCE_TOKEN_SECONDS = 600
AUDIENCE_TOKEN_REUSE = 0.8


class _AudienceTokens:
    """Short-lived ServiceAccount tokens per audience, requested on the event loop, read from hvac's thread."""

    def __init__(self, kube: KubeGateway, namespace: str, service_account: str) -> None:
        self._kube, self._namespace, self._service_account = kube, namespace, service_account
        self._tokens: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def provider(self, audience: str, loop: asyncio.AbstractEventLoop) -> SecretProvider:
        def read() -> str:
            with self._lock:
                held = self._tokens.get(audience)
                if held is not None and datetime.now(UTC) < held[1]:
                    return held[0]
                future = asyncio.run_coroutine_threadsafe(self._kube.request_token(
                    self._namespace, self._service_account, audience=audience,
                    expiration_seconds=AUDIENCE_TOKEN_SECONDS), loop)
                token, expires = future.result(timeout=SECRET_READ_TIMEOUT)
                lifetime = (expires - datetime.now(UTC)).total_seconds()
                self._tokens[audience] = (token, datetime.now(UTC) + timedelta(seconds=lifetime * AUDIENCE_TOKEN_REUSE))
                return token

        return read


class VaultSessionFactory:
    """One VaultSession per distinct connection (address, namespace, CA, auth)."""

    def __init__(self, kube: KubeGateway, *, sa_token_file: str, timeout: float = 10.0, default_address: str = "",
                 service_account: tuple[str, str] | None = None) -> None:
        """`default_address`: the Vault the projected token in `sa_token_file` is for. `service_account`:
        (namespace, name) of the operator's own ServiceAccount, for the other Vaults' tokens."""
        self._kube = kube
        self._sa_token_file = sa_token_file
        self._default_address = default_address
        self._audience_tokens = _AudienceTokens(kube, *service_account) if service_account else None
        self._timeout = timeout
        self._sessions: dict[VaultConnection, VaultSession] = {}
        self._lock = asyncio.Lock()

    def _secret_reader(self, ref: SecretKeyRef, loop: asyncio.AbstractEventLoop) -> SecretProvider:
        """hvac logs in from a worker thread; the Secret is read on the event loop, which owns the client."""

        def read() -> str:
            future = asyncio.run_coroutine_threadsafe(self._kube.read_secret_key(ref), loop)
            return future.result(timeout=SECRET_READ_TIMEOUT)

        return read

    def _strategy(self, connection: VaultConnection, loop: asyncio.AbstractEventLoop) -> AuthStrategy:
        auth = connection.auth
        if isinstance(auth, KubernetesAuth):
            if self._default_address and same_destination(connection.address, self._default_address):
                return KubernetesLogin(role=auth.role, mount=auth.mount, jwt=file_reader(self._sa_token_file))
            return KubernetesLogin(role=auth.role, mount=auth.mount, jwt=self._audience_jwt(connection.address, loop))
        if isinstance(auth, AppRoleAuth):
            return AppRoleLogin(role_id=auth.role_id, mount=auth.mount,
                                secret_id=self._secret_reader(auth.secret_id_ref, loop))
        if isinstance(auth, TokenAuth):
            return TokenLogin(token=self._secret_reader(auth.token_ref, loop))
        raise TypeError(f"unknown Vault auth {type(auth).__name__}")

    def _audience_jwt(self, address: str, loop: asyncio.AbstractEventLoop) -> SecretProvider:
        tokens = self._audience_tokens
        if tokens is None:
            def refuse() -> str:
                raise VaultError(
                    "the operator's Vault login for the identity failed: kubernetes auth at a Vault other than "
                    "the default one needs the operator's ServiceAccount name",
                    reason=reasons.VAULT_PERMISSION_DENIED, transient=False,
                    detail=f"kubernetes auth at {address}: run the operator with --service-account (env "
                           "POD_SERVICE_ACCOUNT; the chart sets it) so it can request a token of that Vault's audience")
            return refuse
        return tokens.provider(vault_audience(address), loop)

    async def _verify(self, connection: VaultConnection) -> bool | str:
        if connection.ca_bundle:
            return ca_file_for(connection.ca_bundle)
        if connection.ca_secret_ref is not None:
            return ca_file_for(await self._kube.read_secret_key(connection.ca_secret_ref))
        return True

    async def get(self, connection: VaultConnection) -> VaultSession:
        session = self._sessions.get(connection)
        if session is not None:
            return session
        async with self._lock:
            session = self._sessions.get(connection)
            if session is None:
                session = VaultSession(connection, self._strategy(connection, asyncio.get_running_loop()),
                                       verify=await self._verify(connection), timeout=self._timeout)
                self._sessions[connection] = session
            return session
