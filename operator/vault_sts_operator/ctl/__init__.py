"""Verbs for people, beside `run`: status, rotate, check-identity, mfa enroll, pod-identity snippet|patch.

Exit codes (the same for every verb; `vault-sts-operator VERB --help` repeats them):

    0  done: the credential is Ready / rotated / the identity checks out / the device is enrolled
    1  the thing checked is not well: not Ready, rotation failed or timed out, a check failed,
       AWS or Vault refused an enrolment step
    2  usage error (bad arguments)
    3  not found: no such AssumedRoleCredential or MFAIdentity
    4  could not talk to the Kubernetes API, Vault or AWS (unreachable, unauthorised)
"""

from __future__ import annotations

import argparse
import sys

from vault_sts_operator.ctl.errors import EXIT_CODES_HELP, CtlError


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vault_sts_operator.ctl import enroll, identity, pod_identity, rotate, status

    for module in (status, rotate, identity, enroll, pod_identity):
        module.register(sub, EXIT_CODES_HELP)


def dispatch(args: argparse.Namespace) -> int:
    try:
        code: int = args.handler(args)
    except CtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code
