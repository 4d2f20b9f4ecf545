"""``python -m devstack up|down|status|env|kubeconfig`` (``make stack`` / ``make stack-down``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack import stack
from devstack.procs import StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the stack (idempotent) and write .stack/env")
    down = sub.add_parser("down", help="stop every stack process and delete its data")
    down.add_argument("--purge", action="store_true", help="also delete logs, certificates and kubeconfigs")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("env", help="print .stack/env")
    kc = sub.add_parser("kubeconfig", help="write a kubeconfig acting as a ServiceAccount (TokenRequest)")
    kc.add_argument("--namespace", "-n", required=True)
    kc.add_argument("--service-account", required=True)
    kc.add_argument("--out", required=True, type=Path)
    kc.add_argument("--expiration-seconds", type=int, default=24 * 3600)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            s = stack.Stack.default()
            stack.down(s, keep_logs=not args.purge)
            if args.purge:
                import shutil

                shutil.rmtree(s.layout.root, ignore_errors=True)
        elif args.command == "status":
            print(stack.status())
        elif args.command == "env":
            env_file = stack.Stack.default().layout.env_file
            if not env_file.is_file():
                print(f"{env_file} not found: the stack is not up (`make stack`)", file=sys.stderr)
                return 1
            sys.stdout.write(env_file.read_text())
        elif args.command == "kubeconfig":
            from devstack.env import StackEnv
            from devstack.kubeconfig import kubeconfig_for_service_account

            path = kubeconfig_for_service_account(
                StackEnv.load(), args.namespace, args.service_account, args.out, args.expiration_seconds
            )
            print(path)
    except StackError as exc:
        print(f"devstack {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
