"""`vault-sts-operator mfa enroll`: give an IAM user a virtual MFA device whose seed lives only in Vault.

1. IAM CreateVirtualMFADevice (bootstrap method Base32StringSeed): AWS returns the seed once.
2. Vault: import the seed into the TOTP engine (`POST <mount>/keys/<key>`); Vault never returns it.
3. Read two consecutive codes from Vault (`GET <mount>/code/<key>`, one time step apart) and call
   IAM EnableMFADevice with them.

The seed stays in this process's memory: it is never printed, logged or written to disk. If a step
after the first fails, the device is deleted again (and the TOTP key, if this run created it).
AWS credentials come from boto3's usual chain (an administrator's profile, AWS_PROFILE, ...);
`--endpoint-url` or AWS_ENDPOINT_URL_IAM points at another IAM endpoint. Vault: VAULT_ADDR and
VAULT_TOKEN (a token that may write <mount>/keys/<key>).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from vault_sts_operator.ctl.errors import OK, CtlError, Unreachable


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], exit_help: str) -> None:
    mfa = sub.add_parser("mfa", help="MFA device chores (enroll)", description="MFA device chores.")
    verbs = mfa.add_subparsers(dest="mfa_command", required=True)
    parser = verbs.add_parser("enroll", help="create and enable a virtual MFA device whose seed only Vault holds",
                              description=__doc__, epilog=exit_help,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", required=True, help="the IAM user (the MFAIdentity's user)")
    parser.add_argument("--device-name", default="", help="virtual device name (default: the user name)")
    parser.add_argument("--totp-mount", default="totp", help="Vault TOTP engine mount (totp)")
    parser.add_argument("--totp-key", default="", help="Vault TOTP key name (default: the user name)")
    parser.add_argument("--issuer", default="AWS", help="issuer recorded with the TOTP key (AWS)")
    parser.add_argument("--vault-address", default=os.environ.get("VAULT_ADDR", ""), help="(env VAULT_ADDR)")
    parser.add_argument("--vault-namespace", default=os.environ.get("VAULT_NAMESPACE", ""))
    parser.add_argument("--vault-ca-file", default=os.environ.get("VAULT_CACERT", ""))
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--endpoint-url", default="", help="IAM endpoint (default: AWS's, or AWS_ENDPOINT_URL_IAM)")
    parser.set_defaults(handler=run)


def _vault(args: argparse.Namespace) -> Any:
    import hvac

    token = os.environ.get("VAULT_TOKEN", "")
    if not args.vault_address or not token:
        raise CtlError("Vault: set VAULT_ADDR (or --vault-address) and VAULT_TOKEN")
    return hvac.Client(url=args.vault_address, token=token, namespace=args.vault_namespace or None,
                       verify=args.vault_ca_file or True, timeout=10)


def _aws_error(exc: Exception, step: str) -> CtlError:
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return CtlError(f"{step}: AWS said {error.get('Code')}: {error.get('Message')}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return Unreachable(f"{step}: no AWS credentials (profile, environment)")
    return Unreachable(f"{step}: {type(exc).__name__}")


def _vault_error(exc: Exception, step: str) -> CtlError:
    import hvac.exceptions
    import requests

    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return Unreachable(f"{step}: Vault refused the token (permission denied)")
    if isinstance(exc, requests.RequestException):
        return Unreachable(f"{step}: Vault unreachable ({type(exc).__name__})")
    errors = getattr(exc, "errors", None)
    return CtlError(f"{step}: Vault said {'; '.join(map(str, errors)) if errors else type(exc).__name__}")


def consecutive_codes(read: Callable[[], tuple[str, int]], *, clock: Callable[[], float] = time.time,
                      sleep: Callable[[float], None] = time.sleep, period: int = 30) -> tuple[str, str]:
    """Two codes of consecutive time steps: one now, one after the next step boundary."""
    first, step = read()
    while True:
        sleep(max(0.05, (step + 1) * period - clock() + 0.2))
        second, next_step = read()
        if next_step == step + 1:
            return first, second
        if next_step > step + 1:  # slept past a whole step: start again from this one
            first, step = second, next_step


def run(args: argparse.Namespace) -> int:
    import boto3
    import hvac.exceptions
    import requests

    device_name = args.device_name or args.user
    key = args.totp_key or args.user
    vault = _vault(args)
    try:
        if vault.read(f"{args.totp_mount}/keys/{key}") is not None:
            raise CtlError(f"Vault already has {args.totp_mount}/keys/{key}: pick another --totp-key")
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _vault_error(exc, "checking the TOTP key") from None
    iam = boto3.client("iam", region_name=args.region, endpoint_url=args.endpoint_url or None)
    try:
        created = iam.create_virtual_mfa_device(VirtualMFADeviceName=device_name)["VirtualMFADevice"]
    except Exception as exc:
        raise _aws_error(exc, "CreateVirtualMFADevice") from None
    serial = str(created["SerialNumber"])
    seed_raw = created.pop("Base32StringSeed")
    created.pop("QRCodePNG", None)
    print(f"created virtual MFA device {serial}")
    imported = False
    try:
        try:
            vault.write(f"{args.totp_mount}/keys/{key}", key=seed_raw.decode() if isinstance(seed_raw, bytes)
                        else str(seed_raw), issuer=args.issuer, account_name=args.user, period=30, digits=6,
                        algorithm="SHA1")
            imported = True
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _vault_error(exc, f"importing the seed into {args.totp_mount}/keys/{key}") from None
        finally:
            del seed_raw  # the only copy outside Vault: gone before any code is read
        print(f"seed imported into Vault {args.totp_mount}/keys/{key} (Vault never returns it)")

        def read_code() -> tuple[str, int]:
            try:
                data = vault.read(f"{args.totp_mount}/code/{key}")["data"]
            except (hvac.exceptions.VaultError, requests.RequestException) as exc:
                raise _vault_error(exc, f"reading {args.totp_mount}/code/{key}") from None
            return str(data["code"]), int(float(data.get("generated") or time.time()) // 30)

        print("waiting for two consecutive codes (up to 30 s)")
        code1, code2 = consecutive_codes(read_code)
        try:
            iam.enable_mfa_device(UserName=args.user, SerialNumber=serial, AuthenticationCode1=code1,
                                  AuthenticationCode2=code2)
        except Exception as exc:
            raise _aws_error(exc, "EnableMFADevice") from None
    except BaseException:
        _undo(iam, vault, serial, f"{args.totp_mount}/keys/{key}" if imported else "")
        raise
    print(f"enabled {serial} for user {args.user}")
    print("MFAIdentity spec.mfa:")
    print(f"  mfa: {{serialNumber: {serial}, totp: {{mount: {args.totp_mount}, key: {key}}}}}")
    return OK


def _undo(iam: Any, vault: Any, serial: str, vault_key_path: str) -> None:
    try:
        iam.delete_virtual_mfa_device(SerialNumber=serial)
        print(f"undone: deleted virtual MFA device {serial}")
    except Exception as exc:
        print(f"could not delete {serial} ({type(exc).__name__}): delete it by hand")
    if vault_key_path:
        try:
            vault.delete(vault_key_path)
            print(f"undone: deleted Vault {vault_key_path}")
        except Exception as exc:
            print(f"could not delete Vault {vault_key_path} ({type(exc).__name__}): delete it by hand")
