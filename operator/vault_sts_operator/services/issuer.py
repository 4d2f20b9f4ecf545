"""Issuing one credential: identity -> (MFA session | direct MFA | Vault's AWS engine) -> STS.

The flow of DESIGN.md, "How one credential is issued", steps 2 and 3. Blocking
client calls run in worker threads; STS calls are bounded and fair per identity.
MFA sessions come from `MfaSessionCache` (one provider per access-key source);
Vault's and STS's errors are mapped to reasons by their clients.
"""

from __future__ import annotations

import asyncio
import logging

from vault_sts_operator.api.specs import CredentialSpec, IdentitySpec, KvAccessKey, VaultAwsAccessKey
from vault_sts_operator.clients.sts import AssumeRoleRequest, StsGateway
from vault_sts_operator.clients.vault_factory import VaultSessionFactory
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.errors import InvalidSpecError, SessionInvalidError
from vault_sts_operator.domain.tenancy import SessionParameters, session_parameters
from vault_sts_operator.services.limiter import BlockingCalls
from vault_sts_operator.services.mfa_device import MfaDeviceGuard
from vault_sts_operator.services.mfa_sessions import MfaSessionCache, fetch_code

log = logging.getLogger(__name__)


class CredentialIssuer:
    def __init__(
        self,
        *,
        vault: VaultSessionFactory,
        sts: StsGateway,
        devices: MfaDeviceGuard,
        sessions: MfaSessionCache,
        calls: BlockingCalls,
    ) -> None:
        self._vault = vault
        self._sts = sts
        self._devices = devices
        self._calls = calls
        self.sessions = sessions

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
                return await self._calls.run(identity.name, lambda s=session: self._sts.assume_role(  # type: ignore[misc]
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
        vault = await self._vault.get(identity.vault)
        key = await asyncio.to_thread(vault.read_access_key, source.mount, source.path,
                                      source.access_key_id_key, source.secret_access_key_key)

        async def use(code: str) -> TemporaryCredentials:
            return await self._calls.run(identity.name, lambda: self._sts.assume_role(
                region=identity.sts_region, endpoint=identity.sts_endpoint, key_id=key.access_key_id,
                secret=key.secret_access_key, token=None, request=request, serial=identity.mfa_serial, code=code))

        # The device's queue is fair across namespaces: one namespace's many direct credentials
        # cannot make another namespace wait behind all of them.
        return await self._devices.spend(identity.device_key, lambda: fetch_code(self._vault, identity), use,
                                         identity=identity.name, tenant=tenant)

    async def _issue_through_vault_sts(self, identity: IdentitySpec, source: VaultAwsAccessKey,
                                       request: AssumeRoleRequest) -> TemporaryCredentials:
        vault = await self._vault.get(identity.vault)
        return await asyncio.to_thread(vault.aws_assume_role, source.mount, source.role, request.role_arn,
                                       request.session_name, request.duration_seconds)


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
        tenant_external_id=spec.external_id, duration_seconds=spec.duration_seconds, mfa_mode=spec.mfa_mode,
        delivery_mode=spec.delivery.mode)
