"""``python -m devstack.sts_emulator --host 127.0.0.1 --port 18790 [--state-file PATH]``"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .emulator import Emulator
from .server import EmulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sts_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18790, help="0 picks a free port (printed on stdout)")
    parser.add_argument(
        "--state-file", type=Path, default=None, help="persist users, keys, devices, roles"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    emulator = Emulator(state_file=args.state_file)
    server = EmulatorServer((args.host, args.port), emulator)
    host, port = server.server_address[:2]
    print(f"sts-emulator listening on http://{host!s}:{port}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
