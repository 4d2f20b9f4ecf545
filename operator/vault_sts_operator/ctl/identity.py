"""`vault-sts-operator check-identity NAME`: can the operator use this MFAIdentity? Nothing is spent.

Logs in to Vault as the operator would (kubernetes auth with a short-lived token of the operator's
ServiceAccount, or the identity's AppRole / token Secret), reads the long-term key (KV mode), asks
AWS who that key belongs to (sts:GetCallerIdentity, which needs no permission and no MFA), reads a
TOTP code and checks that the MFA serial is in the key's account. The code is never sent to AWS,
so no TOTP step is spent; no secret value is printed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from vault_sts_operator.api.specs import (
    AppRoleAuth,
    ConnectionRules,
    IdentitySpec,
    KubernetesAuth,
    KvAccessKey,
    TokenAuth,
    VaultConnection,
    parse_identity,
)
from vault_sts_operator.ctl.errors import OK, UNHEALTHY, CtlError, Unreachable
from vault_sts_operator.domain.destinations import AWS_STS_ENDPOINTS, same_destination, vault_audience


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], exit_help: str) -> None:
    parser = sub.add_parser("check-identity", help="check an MFAIdentity's Vault login, key and TOTP (spends nothing)",
                            description=__doc__, epilog=exit_help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the MFAIdentity")
    parser.add_argument("--service-account", default="vault-sts-operator/vault-sts-operator", metavar="NS/NAME",
                        help="the operator's ServiceAccount, for kubernetes auth (default: %(default)s)")
    parser.add_argument("--audience", action="append", default=[],
                        help="token audience Vault's kubernetes auth role expects (repeatable; default: vault, "
                             "as the chart's vault.auth.kubernetes.audience)")
    parser.add_argument("--allow-insecure-http", action="store_true",
                        default=os.environ.get("VSO_ALLOW_INSECURE_HTTP", "").lower() in ("1", "true", "yes"),
                        help="DEVELOPMENT ONLY: accept http:// Vault and STS addresses, as the operator's flag of "
                             "the same name (env VSO_ALLOW_INSECURE_HTTP)")
    parser.add_argument("--vault-address", default=os.environ.get("VAULT_ADDR", ""),
                        help="the operator's default Vault address, for identities that name none")
    parser.add_argument("--allowed-vault-address", action="append", default=[], metavar="URL",
                        help="a Vault address identities may name besides --vault-address, as the operator's flag "
                             "(repeatable; chart allowedDestinations.vaultAddresses): any other is refused, and "
                             "nothing is sent there")
    parser.add_argument("--allowed-sts-endpoint", action="append", default=[], metavar="URL",
                        help="an STS endpoint identities may name, as the operator's flag (repeatable; default: "
                             "AWS's public endpoints)")
    parser.add_argument("--vault-role", default="vault-sts-operator",
                        help="the operator's default Vault kubernetes-auth role, for identities that name no auth "
                             "(as the chart's vault.auth.kubernetes.role; default: %(default)s)")
    parser.add_argument("--vault-auth-mount", default="kubernetes",
                        help="the mount of that auth method (as vault.auth.kubernetes.mount; default: %(default)s)")
    parser.add_argument("--vault-ca-file", default=os.environ.get("VAULT_CACERT", ""),
                        help="PEM CA bundle for Vault (default: the identity's caBundle)")
    parser.set_defaults(handler=run)


class Report:
    def __init__(self) -> None:
        self.failed = False

    def step(self, what: str, action: Callable[[], str]) -> bool:
        try:
            detail = action()
        except CtlError as exc:
            self.failed = True
            print(f"  FAIL  {what}: {exc}")
            return False
        except Exception as exc:
            self.failed = True
            print(f"  FAIL  {what}: {_describe(exc)}")
            return False
        print(f"  ok    {what}: {detail}")
        return True


def _describe(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{getattr(exc, 'reason', type(exc).__name__)}: {message}"[:400]


def _vault_session(kube: Any, identity: IdentitySpec, args: argparse.Namespace) -> Any:
    from vault_sts_operator.clients.vault import VaultSession, ca_file_for
    from vault_sts_operator.clients.vault_auth import AppRoleLogin, AuthStrategy, KubernetesLogin, TokenLogin

    auth = identity.vault.auth
    strategy: AuthStrategy
    if isinstance(auth, KubernetesAuth):
        namespace, _, sa = args.service_account.partition("/")
        # As the operator does: the default Vault gets the chart's audience, any other allowed Vault its own
        # address as the audience (clients/vault_factory.py), so the token opens that Vault only.
        at_default = bool(args.vault_address) and same_destination(identity.vault.address, args.vault_address)
        audiences = (args.audience or ["vault"]) if at_default else [vault_audience(identity.vault.address)]
        token = kube.service_account_token(namespace, sa, audiences)
        strategy = KubernetesLogin(role=auth.role, mount=auth.mount, jwt=lambda: token)
    elif isinstance(auth, AppRoleAuth):
        ref = auth.secret_id_ref
        strategy = AppRoleLogin(role_id=auth.role_id, mount=auth.mount,
                                secret_id=lambda: kube.read_secret_key(ref.namespace, ref.name, ref.key))
    elif isinstance(auth, TokenAuth):
        tref = auth.token_ref
        strategy = TokenLogin(token=lambda: kube.read_secret_key(tref.namespace, tref.name, tref.key))
    else:  # pragma: no cover - the spec parser knows no other
        raise CtlError(f"unknown Vault auth {type(auth).__name__}")
    verify: bool | str = True
    if args.vault_ca_file:
        verify = args.vault_ca_file
    elif identity.vault.ca_bundle:
        verify = ca_file_for(identity.vault.ca_bundle)
    elif identity.vault.ca_secret_ref is not None:
        cref = identity.vault.ca_secret_ref
        verify = ca_file_for(kube.read_secret_key(cref.namespace, cref.name, cref.key))
    return VaultSession(identity.vault, strategy, verify=verify)


def run(args: argparse.Namespace) -> int:
    from vault_sts_operator.api.specs import KubernetesAuth as DefaultAuth
    from vault_sts_operator.ctl.kube import Kube
    from vault_sts_operator.domain.errors import IssuingError

    kube = Kube()
    body = kube.identity(args.name)
    namespace = args.service_account.partition("/")[0]
    default = (VaultConnection(address=args.vault_address.rstrip("/"), auth=DefaultAuth(role=args.vault_role,
                                                                                           mount=args.vault_auth_mount))
               if args.vault_address else None)
    try:
        identity = parse_identity(args.name, str((body.get("metadata") or {}).get("uid")), body.get("spec") or {},
                                  default_vault=default, operator_namespace=namespace,
                                  rules=ConnectionRules(allow_insecure_http=args.allow_insecure_http,
                                                        vault_addresses=tuple(args.allowed_vault_address),
                                                        sts_endpoints=tuple(args.allowed_sts_endpoint)
                                                        or AWS_STS_ENDPOINTS))
    except IssuingError as exc:
        raise CtlError(f"MFAIdentity {args.name} is not valid: {exc.message}") from None
    print(f"MFAIdentity {args.name}: Vault {identity.vault.address} ({identity.vault.auth.__class__.__name__}), "
          f"MFA {identity.mfa_serial}")
    report = Report()
    session = _vault_session(kube, identity, args)
    if not report.step("Vault login", lambda: _login(session)):
        raise Unreachable("Vault login failed: nothing else can be checked")
    key_holder: dict[str, Any] = {}
    source = identity.access_key
    if isinstance(source, KvAccessKey):
        def read_key() -> str:
            key = session.read_access_key(source.mount, source.path, source.access_key_id_key,
                                          source.secret_access_key_key)
            key_holder["key"] = key
            return f"{source.mount}/data/{source.path} holds access key {key.access_key_id}"

        if report.step("long-term key readable", read_key):
            report.step("AWS knows the key (GetCallerIdentity)",
                        lambda: key_holder.setdefault("arn", _caller(identity, key_holder["key"])))
    else:
        print(f"  skip  long-term key: held by Vault's AWS engine ({source.mount}/roles/{source.role}); "
              "it is used only when a credential is issued")
    report.step("TOTP code readable (not sent anywhere)", lambda: _totp(session, identity))
    if "arn" in key_holder:
        report.step("MFA serial in the key's account", lambda: _same_account(identity, key_holder["arn"]))
    key_holder.clear()
    print("identity checks out: nothing was spent" if not report.failed else "identity has problems (see above)")
    return UNHEALTHY if report.failed else OK


def _login(session: Any) -> str:
    session.ensure_login()
    return "token obtained"


def _totp(session: Any, identity: IdentitySpec) -> str:
    code = session.totp_code(identity.totp.mount, identity.totp.key, identity.totp.period)
    return f"{identity.totp.mount}/code/{identity.totp.key} answers (period {code.period}s)"


def _caller(identity: IdentitySpec, key: Any) -> str:
    import boto3
    import botocore.exceptions

    client = boto3.client("sts", region_name=identity.sts_region, endpoint_url=identity.sts_endpoint or None,
                          aws_access_key_id=key.access_key_id, aws_secret_access_key=key.secret_access_key)
    try:
        answer = client.get_caller_identity()
    except botocore.exceptions.ClientError as exc:
        raise CtlError(f"AWS refused the key: {exc.response.get('Error', {}).get('Code')}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise Unreachable(f"STS unreachable: {type(exc).__name__}") from None
    return str(answer["Arn"])


def _same_account(identity: IdentitySpec, user_arn: str) -> str:
    account = user_arn.split(":")[4]
    if identity.mfa_serial.startswith("arn:") and identity.mfa_serial.split(":")[4] != account:
        raise CtlError(f"{identity.mfa_serial} is not in account {account}")
    return f"account {account}"
