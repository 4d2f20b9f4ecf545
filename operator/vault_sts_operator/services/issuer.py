"""Issuing one credential: identity -> (MFA session | direct MFA | Vault's AWS engine) -> STS.

The flow of DESIGN.md, "How one credential is issued", steps 2 and 3. Blocking
client calls run in worker threads; STS calls are bounded by a semaphore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from vault_sts_operator import metrics
from vault_sts_operator.api import reasons
from vault_sts_operator.api.specs import CredentialSpec, IdentitySpec, KvAccessKey, VaultAwsAccessKey
from vault_sts_operator.clients.sts import AssumeRoleRequest, StsGateway
from vault_sts_operator.clients.vault import VaultSession
from vault_sts_operator.clients.vault_factory import VaultSessionFactory
from vault_sts_operator.domain.credentials import TemporaryCredentials, TotpCode
from vault_sts_operator.domain.errors import InvalidSpecError, MfaCodeRejectedError, SessionInvalidError, VaultError
from vault_sts_operator.domain.tenancy import SessionParameters, session_parameters
from vault_sts_operator.services.limiter import FairLimiter
from vault_sts_operator.services.mfa_device import MfaDeviceGuard
from vault_sts_operator.services.mfa_sessions import MfaSessionCache

log = logging.getLogger(__name__)
T = TypeVar("T")

SessionListener = Callable[[IdentitySpec, TemporaryCredentials], None]


class CredentialIssuer:
    def __init__(
        self,
        *,
        vault: VaultSessionFactory,
        sts: StsGateway,
        devices: MfaDeviceGuard,
        sts_concurrency: int = 16,
        on_session: SessionListener | None = None,
    ) -> None:
        self._vault = vault
        self._sts = sts
        self._devices = devices
        self._sts_slots = FairLimiter(sts_concurrency)
        self._on_session = on_session
        self.sessions = MfaSessionCache(self._create_session)

    async def _sts_call(self, identity: IdentitySpec, fn: Callable[[], T]) -> T:
        async with self._sts_slots.slot(identity.name):
            return await asyncio.to_thread(fn)

    async def _vault_session(self, identity: IdentitySpec) -> VaultSession:
        return await asyncio.to_thread(self._vault.get, identity.vault)

    async def _fetch_code(self, identity: IdentitySpec) -> TotpCode:
        vault = await self._vault_session(identity)
        return await asyncio.to_thread(vault.totp_code, identity.totp.mount, identity.totp.key, identity.totp.period)

    # -- the MFA session ----------------------------------------------------------------
    async def _create_session(self, identity: IdentitySpec) -> TemporaryCredentials:
        vault = await self._vault_session(identity)
        source = identity.access_key

        async def fetch() -> TotpCode:
            return await self._fetch_code(identity)

        if isinstance(source, KvAccessKey):
            key = await asyncio.to_thread(vault.read_access_key, source.mount, source.path,
                                          source.access_key_id_key, source.secret_access_key_key)

            async def use(code: str) -> TemporaryCredentials:
                return await self._sts_call(identity, lambda: self._sts.get_session_token(
                    region=identity.sts_region, endpoint=identity.sts_endpoint, key=key,
                    serial=identity.mfa_serial, code=code, duration_seconds=identity.session_duration))
        elif source.credential_type == "sessionToken":
            async def use(code: str) -> TemporaryCredentials:
                try:
                    return await asyncio.to_thread(vault.aws_session_token, source.mount, source.role, code,
                                                   identity.session_duration)
                except VaultError as exc:
                    if "invalid MFA one time pass code" in exc.detail:
                        raise MfaCodeRejectedError("AWS refused the MFA code passed through Vault's AWS engine",
                                                   detail=exc.detail) from None
                    raise
        else:
            raise InvalidSpecError(f"MFAIdentity {identity.name}: credentialType assumedRole has no MFA session")

        creds = await self._devices.spend(identity.device_key, fetch, use, identity=identity.name,
                                          tenant=f"MFAIdentity/{identity.name}")
        metrics.MFA_SESSIONS.labels(identity=identity.name).inc()
        if self._on_session is not None:
            await asyncio.to_thread(self._on_session, identity, creds)
        return creds

    # -- one credential -------------------------------------------------------------------
    async def issue(self, identity: IdentitySpec, spec: CredentialSpec) -> TemporaryCredentials:
        # Refusals come before any Vault read, TOTP code or STS call.
        params = tenant_parameters(identity, spec)
        request = AssumeRoleRequest(
            role_arn=spec.role_arn, session_name=params.session_name, duration_seconds=spec.duration_seconds,
            external_id=params.external_id, policy=spec.policy, policy_arns=spec.policy_arns, tags=params.tags,
            transitive_tag_keys=params.transitive_tag_keys, source_identity=params.source_identity)
        source = identity.access_key
        if isinstance(source, VaultAwsAccessKey) and source.credential_type == "assumedRole":
            return await self._issue_through_vault_sts(identity, source, request)
        if spec.mfa_mode == "direct":
            if not isinstance(source, KvAccessKey):
                raise InvalidSpecError(
                    f"mfa: direct needs MFAIdentity {identity.name} to use accessKey.kv: with accessKey.vaultAWS "
                    "the long-term key stays in Vault and only the session mode can use it")
            return await self._issue_direct(identity, source, request, tenant=spec.namespace)
        return await self._issue_with_session(identity, request)

    async def _issue_with_session(self, identity: IdentitySpec, request: AssumeRoleRequest) -> TemporaryCredentials:
        for attempt in (1, 2):
            session = await self.sessions.get(identity)
            try:
                return await self._sts_call(identity, lambda s=session: self._sts.assume_role(  # type: ignore[misc]
                    region=identity.sts_region, endpoint=identity.sts_endpoint, key_id=s.access_key_id,
                    secret=s.secret_access_key, token=s.session_token, request=request))
            except SessionInvalidError:
                if attempt == 2:
                    raise
                log.warning("MFA session of identity %s was refused by STS; creating a new one", identity.name)
                self.sessions.invalidate(identity.name, session.access_key_id)
                self._sts.forget(session.access_key_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _issue_direct(self, identity: IdentitySpec, source: KvAccessKey,
                            request: AssumeRoleRequest, *, tenant: str) -> TemporaryCredentials:
        vault = await self._vault_session(identity)
        key = await asyncio.to_thread(vault.read_access_key, source.mount, source.path,
                                      source.access_key_id_key, source.secret_access_key_key)

        async def fetch() -> TotpCode:
            return await self._fetch_code(identity)

        async def use(code: str) -> TemporaryCredentials:
            return await self._sts_call(identity, lambda: self._sts.assume_role(
                region=identity.sts_region, endpoint=identity.sts_endpoint, key_id=key.access_key_id,
                secret=key.secret_access_key, token=None, request=request, serial=identity.mfa_serial, code=code))

        # The device's queue is fair across namespaces: one namespace's many direct credentials
        # cannot make another namespace wait behind all of them.
        return await self._devices.spend(identity.device_key, fetch, use, identity=identity.name, tenant=tenant)

    async def _issue_through_vault_sts(self, identity: IdentitySpec, source: VaultAwsAccessKey,
                                       request: AssumeRoleRequest) -> TemporaryCredentials:
        vault = await self._vault_session(identity)
        try:
            return await asyncio.to_thread(vault.aws_assume_role, source.mount, source.role, request.role_arn,
                                           request.session_name, request.duration_seconds)
        except VaultError as exc:
            if "AccessDenied" in exc.detail:
                hint = (" (credentialType assumedRole: Vault calls AssumeRole without MFA, "
                        "so a role whose trust policy demands MFA refuses it)")
                raise VaultError(f"{exc.message}: AccessDenied{hint}", reason=reasons.ACCESS_DENIED, transient=False,
                                 detail=exc.detail + hint) from None
            raise


def tenant_parameters(identity: IdentitySpec, spec: CredentialSpec) -> SessionParameters:
    """What STS is told about the tenant (domain/tenancy.py), or InvalidSpecError / NotAllowedError.

    With `accessKey.vaultAWS.credentialType: assumedRole`, Vault calls AssumeRole with the role ARN,
    session name and duration only: a tenant's scope-down policy, tags or ExternalId would be
    dropped silently (the credentials would carry more rights than asked), so they are refused.
    """
    source = identity.access_key
    if isinstance(source, VaultAwsAccessKey) and source.credential_type == "assumedRole":
        ignored = [name for name, value in (("policy", spec.policy), ("policyArns", spec.policy_arns),
                                            ("tags", spec.tags), ("externalId", spec.external_id)) if value]
        if ignored:
            raise InvalidSpecError(
                f"spec.{', spec.'.join(ignored)}: MFAIdentity {identity.name!r} issues through Vault's AWS engine "
                "(credentialType assumedRole), which cannot pass them; remove them or use another identity")
    return session_parameters(
        identity.tenancy, identity=identity.name, namespace=spec.namespace, name=spec.name,
        requested_session_name=spec.role_session_name, tenant_tags=spec.tags,
        tenant_external_id=spec.external_id, duration_seconds=spec.duration_seconds, mfa_mode=spec.mfa_mode)
