"""``make consumers``: build (or find cached) the Go, JavaScript and Java consumer images and, when a stack with a
node runs, import them into it. Prints ``sdk reference`` per line (python: the operator image, if loaded).

``python -m devstack.consumers [--no-load]``
"""

from __future__ import annotations

import argparse
import sys
import time

from devstack import consumers
from devstack.procs import StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.consumers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-load", action="store_true", help="only build (or find) the archives")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        images = consumers.build_images()
        print(f"[consumers] built or found in {time.monotonic() - started:.1f}s", file=sys.stderr)
        refs = {sdk: image.reference for sdk, image in images.items()}
        if not args.no_load:
            from devstack import node, stack
            from devstack.env import StackEnv
            from devstack.handle import Stack

            handle = Stack.default()
            if node.enabled() and stack.is_healthy(handle) and handle.layout.env_file.is_file():
                env = StackEnv.load(handle.layout.env_file)
                loaded = time.monotonic()
                consumers.load(env, images)
                print(f"[consumers] in the node's containerd ({time.monotonic() - loaded:.1f}s)", file=sys.stderr)
                if env.extra.get("VSO_IMAGE"):
                    refs = {"python": env.extra["VSO_IMAGE"], **refs}
            else:
                print("[consumers] no stack with a node runs: build_all(stack) imports them when a test needs them",
                      file=sys.stderr)
    except StackError as exc:
        print(f"make consumers failed: {exc}", file=sys.stderr)
        return 1
    for sdk, ref in refs.items():
        print(f"{sdk} {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
