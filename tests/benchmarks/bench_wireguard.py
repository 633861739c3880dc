"""Benchmark: setting up and removing one end of a WireGuard tunnel at the driver level, kernel
module and userspace wireguard-go side by side in one run.

Run as root: ``.venv/bin/python -m tests.benchmarks.bench_wireguard [--count 20] [--vm]``.
This machine's kernel has no WireGuard, so only wireguard-go is measured here; ``--vm`` runs the
benchmark inside the test VM of tests/vm (software emulation: the absolute times there are
tens of times slower than on hardware, the ratio between the backends is what to read). Prints
p50/p90 per operation and per backend and the kernel/userspace ratio. Not part of the test
suite: timings are never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nsm_forwarder.drivers.kernel import wgkernel
from nsm_forwarder.drivers.plan import plan_from_xcon
from tests.drivers.nodes import Node
from tests.helpers import IS_ROOT, Pods, make_underlay, remote_pair


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def measure(backend: str, count: int) -> tuple[list[float], list[float]]:
    """``count`` apply + remove of the client end of a WireGuard tunnel on one node."""
    underlay = make_underlay()
    pods = Pods()
    node = Node(underlay.a, underlay.a_ip, backend)
    try:
        node.init()
        client, endpoint = pods.make(), pods.make()
        applies, removes = [], []
        for i in range(count):
            ips = (underlay.a_ip, underlay.b_ip)
            pair = remote_pair(f"bw{i}", client, endpoint, *ips, "WIREGUARD")
            plan = plan_from_xcon(pair.outgoing, mtu=1)
            start = time.perf_counter()
            applied = node.call("apply", plan)
            applies.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            node.call("remove", applied)
            removes.append((time.perf_counter() - start) * 1000)
        return applies, removes
    finally:
        node.close()
        pods.cleanup()
        underlay.delete()


def report(count: int) -> None:
    backends = ["userspace"] + (["kernel"] if wgkernel.unavailable() is None else [])
    results = {b: measure(b, count) for b in backends}
    print(f"{count} sequential WireGuard tunnel ends, driver level (ms):")
    for backend, (applies, removes) in results.items():
        for op, values in (("apply", applies), ("remove", removes)):
            print(
                f"  {backend:9s} {op:6s} p50 {statistics.median(values):7.1f}"
                f"  p90 {_pct(values, 0.9):7.1f}"
            )
    if "kernel" in results:
        for i, op in enumerate(("apply", "remove")):
            ratio = statistics.median(results["kernel"][i]) / statistics.median(
                results["userspace"][i]
            )
            print(f"  kernel / userspace {op}: {ratio:.2f}x")
    else:
        print(f"  (no kernel WireGuard here: {wgkernel.unavailable()}; try --vm)")


def in_vm(count: int) -> int:
    from tests.vm import machine

    assets = machine.find_assets()
    if assets is None:
        print("no test VM kernel: run python -m tests.vm.machine first", file=sys.stderr)
        return 1
    root = Path(__file__).resolve().parents[2]
    command = f"cd {root} && {sys.executable} -m tests.benchmarks.bench_wireguard --count {count}"
    with tempfile.TemporaryDirectory() as out:
        result = machine.run(assets, command, Path(out), env={"NSM_TEST_TIME_FACTOR": "10"})
    lines = [line for line in result.console.splitlines() if not line.startswith("[")]
    print("\n".join(lines))
    return 0 if result.rc == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--vm", action="store_true", help="run inside the test VM (tests/vm)")
    args = parser.parse_args()
    if not IS_ROOT:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    if args.vm:
        return in_vm(args.count)
    report(args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
