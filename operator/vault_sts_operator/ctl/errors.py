"""Errors of the people-facing verbs, each with its exit code."""

from __future__ import annotations

OK = 0
UNHEALTHY = 1
# 2 is argparse's own usage error
NOT_FOUND = 3
UNREACHABLE = 4

EXIT_CODES_HELP = """exit codes:
  0  done (Ready / rotated / identity checks out / device enrolled)
  1  not well: not Ready, rotation failed or timed out, a check failed, AWS or Vault refused
  2  usage error
  3  no such AssumedRoleCredential or MFAIdentity
  4  Kubernetes API, Vault or AWS unreachable or refusing our credentials"""


class CtlError(Exception):
    exit_code = UNHEALTHY


class NotFound(CtlError):
    exit_code = NOT_FOUND


class Unreachable(CtlError):
    exit_code = UNREACHABLE
