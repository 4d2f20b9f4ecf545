"""Hands out ready Vault sessions: callers never see credentials or log in themselves."""

from __future__ import annotations

import threading

from vault_sts_operator.api.specs import AppRoleAuth, KubernetesAuth, TokenAuth, VaultConnection
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.vault import VaultSession, ca_file_for
from vault_sts_operator.clients.vault_auth import AppRoleLogin, AuthStrategy, KubernetesLogin, TokenLogin, file_reader


class VaultSessionFactory:
    """One VaultSession per distinct connection (address, namespace, CA, auth)."""

    def __init__(self, kube: KubeGateway, *, sa_token_file: str, timeout: float = 10.0) -> None:
        self._kube = kube
        self._sa_token_file = sa_token_file
        self._timeout = timeout
        self._sessions: dict[VaultConnection, VaultSession] = {}
        self._lock = threading.Lock()

    def _strategy(self, connection: VaultConnection) -> AuthStrategy:
        auth = connection.auth
        if isinstance(auth, KubernetesAuth):
            return KubernetesLogin(role=auth.role, mount=auth.mount, jwt=file_reader(self._sa_token_file))
        if isinstance(auth, AppRoleAuth):
            ref = auth.secret_id_ref
            return AppRoleLogin(role_id=auth.role_id, mount=auth.mount,
                                secret_id=lambda: self._kube.read_secret_key(ref))
        if isinstance(auth, TokenAuth):
            token_ref = auth.token_ref
            return TokenLogin(token=lambda: self._kube.read_secret_key(token_ref))
        raise TypeError(f"unknown Vault auth {type(auth).__name__}")

    def _verify(self, connection: VaultConnection) -> bool | str:
        if connection.ca_bundle:
            return ca_file_for(connection.ca_bundle)
        if connection.ca_secret_ref is not None:
            return ca_file_for(self._kube.read_secret_key(connection.ca_secret_ref))
        return True

    def get(self, connection: VaultConnection) -> VaultSession:
        """Blocking (may read a CA Secret): call from a worker thread."""
        with self._lock:
            session = self._sessions.get(connection)
            if session is None:
                session = VaultSession(connection, self._strategy(connection), verify=self._verify(connection),
                                       timeout=self._timeout)
                self._sessions[connection] = session
            return session
