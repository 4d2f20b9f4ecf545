"""Hands out ready Vault sessions: callers never see credentials or log in themselves."""

from __future__ import annotations

import asyncio

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

SECRET_READ_TIMEOUT = 30.0


class VaultSessionFactory:
    """One VaultSession per distinct connection (address, namespace, CA, auth)."""

    def __init__(self, kube: KubeGateway, *, sa_token_file: str, timeout: float = 10.0) -> None:
        self._kube = kube
        self._sa_token_file = sa_token_file
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
            return KubernetesLogin(role=auth.role, mount=auth.mount, jwt=file_reader(self._sa_token_file))
        if isinstance(auth, AppRoleAuth):
            return AppRoleLogin(role_id=auth.role_id, mount=auth.mount,
                                secret_id=self._secret_reader(auth.secret_id_ref, loop))
        if isinstance(auth, TokenAuth):
            return TokenLogin(token=self._secret_reader(auth.token_ref, loop))
        raise TypeError(f"unknown Vault auth {type(auth).__name__}")

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
