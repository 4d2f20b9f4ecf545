"""`vault-sts-operator rotate NAME -n NS`: set the rotate annotation and wait for new credentials.

The operator issues at once when the annotation `vaultsts.io/rotate` takes a new value; this verb
sets it to the current time and waits until the status shows a newer issue (a new access key id,
Ready=True) or a failure (Ready=False with a reason), or the timeout passes.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.ctl.errors import OK, UNHEALTHY, CtlError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], exit_help: str) -> None:
    parser = sub.add_parser("rotate", help="rotate an AssumedRoleCredential now and wait for the new credentials",
                            description=__doc__, epilog=exit_help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the AssumedRoleCredential")
    parser.add_argument("-n", "--namespace", default=None,
                        help="the credential's namespace (default: the kubeconfig context's, as kubectl)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long to wait for the new credentials (120)")
    parser.add_argument("--no-wait", action="store_true", help="set the annotation and return")
    parser.set_defaults(handler=run)


def _ready(body: dict[str, Any]) -> dict[str, Any]:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((cond for cond in conditions if cond.get("type") == "Ready"), {})


def _key(status: dict[str, Any]) -> str | None:
    """What changes at each issue: the access key id, or in mode PodIdentity (no key id in the status) the
    credential's fingerprint."""
    return status.get("accessKeyId") or status.get("credentialFingerprint")


def run(args: argparse.Namespace, *, poll: float = 0.5) -> int:
    from vault_sts_operator.ctl.kube import Kube, current_namespace

    args.namespace = args.namespace or current_namespace()
    kube = Kube()
    before = kube.credential(args.namespace, args.name)
    old_key = _key(before.get("status") or {})
    old_transition = _ready(before).get("lastTransitionTime")
    request = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.annotate_credential(args.namespace, args.name, {c.ROTATE_ANNOTATION: request})
    print(f"{args.namespace}/{args.name}: rotation requested ({c.ROTATE_ANNOTATION}={request})")
    if args.no_wait:
        return OK
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        body = kube.credential(args.namespace, args.name)
        status, ready = body.get("status") or {}, _ready(body)
        key = _key(status)
        if ready.get("status") == "True" and key and key != old_key:
            where = f"Secret {status.get('secretName')}" if status.get("secretName") else \
                f"served to ServiceAccount(s) {', '.join((status.get('delivery') or {}).get('serviceAccounts') or [])}"
            print(f"{args.namespace}/{args.name}: rotated: {old_key or '-'} -> {key}, "
                  f"expires {status.get('expiration')}, {where}")
            return OK
        if ready.get("status") == "False" and ready.get("lastTransitionTime") != old_transition:
            raise CtlError(f"{args.namespace}/{args.name}: rotation failed: {ready.get('reason')}: "
                           f"{ready.get('message')}")
        time.sleep(poll)
    print(f"{args.namespace}/{args.name}: no new credentials within {args.timeout:.0f}s "
          f"(Ready={_ready(kube.credential(args.namespace, args.name)).get('status')}); "
          f"see `vault-sts-operator status {args.name} -n {args.namespace}`")
    return UNHEALTHY
