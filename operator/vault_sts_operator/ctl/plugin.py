"""`kubectl vaultsts`: the verbs for people as a kubectl plugin (the `kubectl-vaultsts` console script).

kubectl runs any `kubectl-NAME` executable on PATH for `kubectl NAME ...` and passes the remaining arguments
unchanged: `kubectl vaultsts status|rotate|check-identity|mfa enroll|pod-identity` are the same verbs, with the
same arguments and exit codes, as `vault-sts-operator status|rotate|check-identity|mfa enroll|pod-identity`
(the plugin registers every verb of ctl/ through `add_verbs`). The operator's own
`run` is not a verb of the plugin.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vault_sts_operator import __version__
from vault_sts_operator.ctl import add_verbs, dispatch


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl vaultsts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=__version__)
    add_verbs(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
