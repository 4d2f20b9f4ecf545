"""`vault-sts-operator status NAME -n NS`: conditions, expiry, renewal, Secret and the last Events.

Without NAME: one line per AssumedRoleCredential of the namespace (Ready and its reason, whether rotation is
failing, expiry, renewal); exit 0 when every one is Ready and none is failing (or there is none), 1 otherwise."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.conditions import find_condition
from vault_sts_operator.ctl.errors import OK, UNHEALTHY
from vault_sts_operator.domain import reasons


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], exit_help: str) -> None:
    parser = sub.add_parser("status", help="show an AssumedRoleCredential: conditions, expiry, Secret, Events "
                                           "(no NAME: list the namespace's)",
                            description=__doc__, epilog=exit_help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=None,
                        help="the AssumedRoleCredential (none: list the namespace's credentials)")
    parser.add_argument("-n", "--namespace", default=None,
                        help="the credential's namespace (default: the kubeconfig context's, as kubectl)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")
    parser.add_argument("--events", type=int, default=5, metavar="N", help="how many of the last Events (5)")
    parser.set_defaults(handler=run)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _relative(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    seconds = int((when - now).total_seconds())
    magnitude = abs(seconds)
    text = f"{magnitude // 3600}h{magnitude % 3600 // 60:02d}m" if magnitude >= 3600 else \
        f"{magnitude // 60}m{magnitude % 60:02d}s"
    return f"{when.isoformat().replace('+00:00', 'Z')} (in {text})" if seconds >= 0 else \
        f"{when.isoformat().replace('+00:00', 'Z')} ({text} ago)"


def _condition(status: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    found = find_condition(status.get("conditions"), type_)
    return dict(found) if found is not None else None


def _failing(status: Mapping[str, Any]) -> bool:
    return (_condition(status, reasons.ROTATION_FAILING) or {}).get("status") == "True"


def healthy(ready: dict[str, Any] | None, failing: bool) -> bool:
    """Exit 0 only for a credential whose Secret is valid and whose latest attempt did not fail."""
    return (ready or {}).get("status") == "True" and not failing


def gather(kube: Any, namespace: str, name: str, events: int) -> dict[str, Any]:
    body = kube.credential(namespace, name)
    spec, status = body.get("spec") or {}, body.get("status") or {}
    secret_name = status.get("secretName") or (spec.get("target") or {}).get("secretName") or name
    secret = kube.secret_metadata(namespace, secret_name)
    items = kube.events(namespace, c.CREDENTIAL_KIND, name)
    items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or
                                 (e.get("metadata") or {}).get("creationTimestamp") or ""))
    ready = _condition(status, reasons.READY)
    return {
        "namespace": namespace, "name": name,
        "identity": (spec.get("identityRef") or {}).get("name"), "roleArn": spec.get("roleArn"),
        "mfa": spec.get("mfa", "session"),
        "ready": ready, "conditions": status.get("conditions") or [],
        "observedGeneration": status.get("observedGeneration"),
        "generation": (body.get("metadata") or {}).get("generation"),
        "accessKeyId": status.get("accessKeyId") or (f"fingerprint {status['credentialFingerprint']}"
                                                     if status.get("credentialFingerprint") else None),
        "assumedRoleArn": status.get("assumedRoleArn"),
        "delivery": ((spec.get("delivery") or {}).get("mode") or "Secret",
                     list((spec.get("delivery") or {}).get("serviceAccounts") or ())),
        "issuedAt": status.get("issuedAt"), "expiration": status.get("expiration"),
        "renewalTime": status.get("renewalTime"),
        "rotationFailing": _condition(status, reasons.ROTATION_FAILING), "failing": _failing(status),
        "failedAttempts": status.get("failedAttempts") or 0, "lastFailureTime": status.get("lastFailureTime"),
        "nextRetryTime": status.get("nextRetryTime"),
        "secret": {"name": secret_name, "exists": secret is not None,
                   "keys": secret["keys"] if secret else [],
                   "ownedByCredential": bool(secret) and any(
                       ref.get("uid") == (body.get("metadata") or {}).get("uid")
                       for ref in secret["metadata"].get("ownerReferences") or [])},
        "rotateRequested": ((body.get("metadata") or {}).get("annotations") or {}).get(c.ROTATE_ANNOTATION),
        "events": [{"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
                    "count": e.get("count") or 1,
                    "last": e.get("lastTimestamp") or e.get("eventTime")} for e in items[-events:]],
    }


def gather_list(kube: Any, namespace: str) -> list[dict[str, Any]]:
    rows = []
    for body in sorted(kube.credentials(namespace), key=lambda b: str((b.get("metadata") or {}).get("name"))):
        spec, status = body.get("spec") or {}, body.get("status") or {}
        ready = _condition(status, reasons.READY) or {}
        failing = _failing(status)
        rows.append({"namespace": namespace, "name": (body.get("metadata") or {}).get("name"),
                     "identity": (spec.get("identityRef") or {}).get("name"),
                     "ready": ready.get("status", "Unknown"), "reason": ready.get("reason", ""),
                     "failing": failing,
                     "failingReason": (_condition(status, reasons.ROTATION_FAILING) or {}).get("reason", "")
                     if failing else "",
                     "secretName": status.get("secretName") or (spec.get("target") or {}).get("secretName"),
                     "expiration": status.get("expiration"), "renewalTime": status.get("renewalTime")})
    return rows


def render_list(rows: list[dict[str, Any]], namespace: str, now: datetime) -> str:
    if not rows:
        return f"No AssumedRoleCredentials in namespace {namespace}."
    table = [("NAME", "IDENTITY", "READY", "REASON", "FAILING", "EXPIRATION", "RENEWAL")]
    table += [(str(r["name"]), str(r["identity"] or "-"), r["ready"], r["reason"] or "-",
               r["failingReason"] if r["failing"] else "-",
               _relative(_parse_time(r["expiration"]), now), _relative(_parse_time(r["renewalTime"]), now))
              for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in table)


def _rotation_line(info: dict[str, Any], now: datetime) -> str:
    if not info["failing"]:
        return "  Rotation:     not failing"
    cond = info["rotationFailing"] or {}
    return (f"  Rotation:     FAILING ({cond.get('reason', '-')}), {info['failedAttempts']} attempt(s) in a row, "
            f"last {_relative(_parse_time(info['lastFailureTime']), now)}; "
            f"next attempt {_relative(_parse_time(info['nextRetryTime']), now)}\n"
            f"                {cond.get('message', '-')}")


def render(info: dict[str, Any], now: datetime) -> str:
    ready = info["ready"] or {}
    lines = [
        f"AssumedRoleCredential {info['namespace']}/{info['name']}",
        f"  Identity:     {info['identity']}   (mfa: {info['mfa']})",
        f"  Role:         {info['roleArn']}",
        f"  Ready:        {ready.get('status', 'Unknown')} ({ready.get('reason', 'no condition yet')})"
        f" since {ready.get('lastTransitionTime', '-')}",
        f"  Message:      {ready.get('message', '-')}",
        _rotation_line(info, now),
        f"  Generation:   {info['generation']} (observed {info['observedGeneration']})",
        f"  Access key:   {info['accessKeyId'] or '-'}   {info['assumedRoleArn'] or ''}".rstrip(),
        f"  Issued:       {_relative(_parse_time(info['issuedAt']), now)}",
        f"  Expiration:   {_relative(_parse_time(info['expiration']), now)}",
        f"  Renewal:      {_relative(_parse_time(info['renewalTime']), now)}",
    ]
    secret = info["secret"]
    mode, accounts = info.get("delivery") or ("Secret", [])
    if mode == "PodIdentity":
        lines.append(f"  Delivery:     PodIdentity (no Secret), to the pods of ServiceAccount(s) {', '.join(accounts)}")
        if secret["exists"] and secret["ownedByCredential"]:
            lines.append(f"  Secret:       {secret['name']} (left from mode Secret; deleted at the next issue)")
    elif secret["exists"]:
        owner = "" if secret["ownedByCredential"] else "  (NOT owned by this credential)"
        lines.append(f"  Secret:       {secret['name']}: {', '.join(secret['keys'])}{owner}")
    else:
        lines.append(f"  Secret:       {secret['name']} (does not exist)")
    if info["rotateRequested"]:
        lines.append(f"  Rotate annotation: {info['rotateRequested']}")
    lines.append(f"Events (last {len(info['events'])}):" if info["events"] else "Events: none")
    lines += [f"  {e['last'] or '-'}  {e['type']:<7} {e['reason']:<16} {e['message']}"
              + (f" (x{e['count']})" if e["count"] > 1 else "") for e in info["events"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from vault_sts_operator.ctl.kube import Kube, current_namespace

    args.namespace = args.namespace or current_namespace()
    if args.name is None:
        rows = gather_list(Kube(), args.namespace)
        if args.output == "json":
            print(json.dumps(rows, indent=2, default=str))
        else:
            print(render_list(rows, args.namespace, datetime.now(UTC)))
        return OK if all(r["ready"] == "True" and not r["failing"] for r in rows) else UNHEALTHY
    info = gather(Kube(), args.namespace, args.name, args.events)
    if args.output == "json":
        print(json.dumps(info, indent=2, default=str))
    else:
        print(render(info, datetime.now(UTC)))
    return OK if healthy(info["ready"], info["failing"]) else UNHEALTHY
