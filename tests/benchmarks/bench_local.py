"""Benchmark: end-to-end local Request / Close through a real forwarder, side by side with the
same data-plane work done by `ip` commands (3 processes per cross-connect), in one run.

Run as root: ``.venv/bin/python -m tests.benchmarks.bench_local [--count 30] [--workers 2]``.
Prints p50/p90 per operation and the ratio to the baseline. Not part of the test suite: timings
are never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from tests.conftest import Node
from tests.helpers import IS_ROOT, BackgroundLoop, Pods, numbered_xcon


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def baseline(pods: Pods, count: int) -> tuple[list[float], list[float]]:
    """The same veth + addresses + up with `ip` (3 processes per cross-connect)."""
    a, b = pods.make(), pods.make()
    create, delete = [], []
    for i in range(count):
        start = time.perf_counter()
        subprocess.run(
            ["ip", "link", "add", f"b{i}", "netns", a.name, "type", "veth"]
            + ["peer", "name", f"c{i}", "netns", b.name],
            check=True,
        )
        for pod, name, ip in ((a, f"b{i}", f"10.50.{i}.1/30"), (b, f"c{i}", f"10.50.{i}.2/30")):
            script = f"addr add {ip} dev {name}\nlink set {name} up\n"
            subprocess.run(
                ["ip", "-n", pod.name, "-batch", "-"], input=script, text=True, check=True
            )
        create.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        subprocess.run(["ip", "-n", a.name, "link", "del", f"b{i}"], check=True)
        delete.append((time.perf_counter() - start) * 1000)
    return create, delete


def forwarder(pods: Pods, count: int, workers: int) -> tuple[list[float], list[float]]:
    loop = BackgroundLoop()
    node = Node(loop, NSM_FORWARDER_WORKERS=str(workers), NSM_FORWARDER_LOG_LEVEL="WARNING")
    try:
        node.start()
        a, b = pods.make(), pods.make()
        stub = node.forwarder.stub()
        requests, closes = [], []
        for i in range(count):
            xcon = numbered_xcon("bench", i, a, b, 51, ends=("b", "c"))
            start = time.perf_counter()
            stub.Request(xcon, timeout=30)
            requests.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            stub.Close(xcon, timeout=30)
            closes.append((time.perf_counter() - start) * 1000)
        return requests, closes
    finally:
        node.close()
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not IS_ROOT:
        print("the benchmark needs root", file=sys.stderr)
        return 1
    pods = Pods()
    try:
        ip_create, ip_delete = baseline(pods, args.count)
        req, close = forwarder(pods, args.count, args.workers)
    finally:
        pods.cleanup()
    rows = [
        ("Request (gRPC end to end)", req, "ip (3 processes)", ip_create),
        ("Close (gRPC end to end)", close, "ip link del", ip_delete),
    ]
    print(f"{args.count} local cross-connects, {args.workers} workers; times in ms")
    print(f"{'operation':28} {'p50':>7} {'p90':>7}   {'baseline':18} {'p50':>7} {'p90':>7}  ratio")
    for name, ours, base_name, base in rows:
        print(
            f"{name:28} {statistics.median(ours):7.1f} {_pct(ours, 0.9):7.1f}   "
            f"{base_name:18} {statistics.median(base):7.1f} {_pct(base, 0.9):7.1f}  "
            f"{statistics.median(ours) / statistics.median(base):5.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
