"""``python -m tests.vpp.peer --api-socket P --stats-socket S [--netns N]``: serve in the
foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from tests.vpp.peer.fake import FakeVPP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vpp.peer", description=__doc__)
    parser.add_argument("--api-socket", required=True)
    parser.add_argument("--stats-socket", default=None)
    parser.add_argument("--netns", default=None, help="VPP's network namespace")
    parser.add_argument("--api-dir", default=None, help="directory of the .api.json files")
    parser.add_argument("--runtime-dir", default=None, help="where relative memif names live")
    parser.add_argument("--vhost-net", action="store_true", help="emulate /dev/vhost-net")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    vpp = FakeVPP(
        api_socket=args.api_socket,
        stats_socket=args.stats_socket,
        netns=args.netns,
        api_dir=args.api_dir,
        vhost_net=args.vhost_net,
        runtime_dir=args.runtime_dir,
    )
    vpp.start()
    print(f"fake VPP ready on {args.api_socket}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        vpp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
