"""``python -m tests.benchmarks``: the forwarder against the kernel's floor, side by side, in one
run (root; about 5 minutes on 2 cores, ``--quick`` about 1).

It measures, each in the same run: the floor (a minimal direct netlink client, and ``ip
-batch``) for the same kernel work as a local cross-connect; a real forwarder's Request and
Close latency sequentially and with 1, 8 and 32 concurrent clients; sustained cross-connects per
second; PSS summed over its processes idle and with ``--live`` cross-connects, its main process
RSS, and the time to close them all; throughput with 1 and 2 workers; Request latency at 100 and
at ``--scale`` live cross-connects and a monitor subscriber's initial transfer there; remote
VXLAN Request/Close latency between two node namespaces. It prints a table of figures and ratios
to the floor, writes JSON (``--json``), and exits 1 when a target of the issue is missed. It
cleans up everything it made; traffic stays inside the namespaces it made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from tests.benchmarks import grpc_floor
from tests.benchmarks.floor import ip_batch, raw_floor
from tests.benchmarks.load import (
    Run,
    alternating,
    calls,
    cpu_seconds,
    initial_transfer,
    pss_kib,
    rss_kib,
    xcon,
)
from tests.benchmarks.report import Report
from tests.conftest import Node
from tests.helpers import IS_ROOT, BackgroundLoop, Pod, Pods, make_underlay, remote_pair


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summary(run: Run) -> dict[str, float]:
    lat = run.latencies
    return {
        "p50_ms": statistics.median(lat) if lat else 0.0,
        "p90_ms": pct(lat, 0.9),
        "p99_ms": pct(lat, 0.99),
        "per_s": run.rate,
        "n": len(lat),
    }


def start_node(loop: BackgroundLoop, workers: int, **env: str) -> Node:
    node = Node(loop, NSM_FORWARDER_WORKERS=str(workers), NSM_FORWARDER_LOG_LEVEL="WARNING", **env)
    node.start()
    time.sleep(1.0)  # let start-up settle before measuring memory
    return node


def local_runs(node: Node, a: Pod, b: Pod, args: argparse.Namespace, out: dict[str, Any]) -> None:
    sock = node.forwarder.socket
    assert node.forwarder.proc is not None
    pid = node.forwarder.proc.pid
    out["memory_idle_pss_kib"] = pss_kib(pid)
    out["memory_idle_pss_anon_kib"] = pss_kib(pid, "Pss_Anon")
    out["memory_idle_main_rss_kib"] = rss_kib(pid)
    seq_req, seq_close = alternating(sock, [xcon(i, a, b, "seq") for i in range(args.count)])
    out["sequential"] = {"request": summary(seq_req), "close": summary(seq_close)}
    out["concurrent"] = {}
    for clients in (1, 8, 32):
        batch = [xcon(i, a, b, f"c{clients}") for i in range(args.batch)]
        req = calls(sock, "Request", batch, clients)
        close = calls(sock, "Close", batch, clients)
        out["concurrent"][str(clients)] = {"request": summary(req), "close": summary(close)}
    live = [xcon(i, a, b, "live") for i in range(args.live)]
    calls(sock, "Request", live, 32)
    time.sleep(0.5)
    out["memory_live"] = {
        "count": args.live,
        "pss_kib": pss_kib(pid),
        "pss_anon_kib": pss_kib(pid, "Pss_Anon"),
        "main_rss_kib": rss_kib(pid),
        "initial_transfer_s": initial_transfer(sock)[0],
    }
    start = time.perf_counter()
    calls(sock, "Close", live, 32)
    out["memory_live"]["close_all_s"] = time.perf_counter() - start


#: live cross-connects per pod pair in the scale run: a node's cross-connects are spread over
#: its pods (a client pod has one or a few), not thousands of veths in two namespaces
PER_PAIR = 25


def scale_runs(node: Node, pods: Pods, args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Request p50 with 100 live and with ``--scale`` live; the initial transfer at scale.

    The live cross-connects are spread over pod pairs of :data:`PER_PAIR` each; the measured
    Requests go to a pair of their own, the same pods at 100 and at ``--scale`` live, so the
    ratio shows what the node-wide number costs (the forwarder's work and the kernel's), not
    how a namespace with thousands of interfaces slows the kernel down."""
    sock = node.forwarder.socket
    pairs = [(pods.make(), pods.make()) for _ in range(max(1, -(-args.scale // PER_PAIR)))]
    live = [xcon(i, *pairs[i // PER_PAIR], "sc") for i in range(args.scale)]
    pa, pb = pods.make(), pods.make()
    probes = [xcon(args.scale + i, pa, pb, "probe") for i in range(50)]
    calls(sock, "Request", live[:100], 32)
    at_100, _ = alternating(sock, probes)
    calls(sock, "Request", live[100:], 32)
    at_scale, _ = alternating(sock, probes)
    took, carried = initial_transfer(sock)
    out["scale"] = {
        "live": args.scale,
        "per_pod_pair": PER_PAIR,
        "request_p50_at_100_ms": statistics.median(at_100.latencies),
        "request_p50_at_scale_ms": statistics.median(at_scale.latencies),
        "initial_transfer_s": took,
        "initial_transfer_xcons": carried,
    }
    start = time.perf_counter()
    calls(sock, "Close", live, 32)
    out["scale"]["close_all_s"] = time.perf_counter() - start


def throughput(loop: BackgroundLoop, workers: int, a: Pod, b: Pod, n: int) -> dict[str, float]:
    """Requests per second at 32 clients with ``workers`` workers, in the steady state: after a
    warm-up round (each worker's first use of a namespace opens its sockets), over two rounds
    of ``n`` Requests (each followed by their Closes, not timed); and how many of the
    machine's cores the forwarder (all its processes) and the clients kept busy meanwhile."""
    node = start_node(loop, workers)
    try:
        sock = node.forwarder.socket
        assert node.forwarder.proc is not None
        pid = node.forwarder.proc.pid
        warm = [xcon(i, a, b, f"w{workers}warm") for i in range(n // 2)]
        calls(sock, "Request", warm, 32)
        calls(sock, "Close", warm, 32)
        done, wall, busy = 0, 0.0, 0.0
        for round_ in range(2):
            batch = [xcon(i, a, b, f"w{workers}r{round_}") for i in range(n)]
            before = cpu_seconds(pid)
            run = calls(sock, "Request", batch, 32)
            busy += cpu_seconds(pid) - before
            done, wall = done + len(run.latencies), wall + run.wall
            calls(sock, "Close", batch, 32)
        return {"per_s": done / wall, "cores_busy": busy / wall}
    finally:
        node.close()


def remote_runs(loop: BackgroundLoop, pods: Pods, count: int) -> dict[str, Any]:
    """Outgoing VXLAN cross-connects on node A of a two-node underlay (the tunnel end only)."""
    u = make_underlay()
    node = Node(loop, u.a, NSM_FORWARDER_SRC_IP=u.a_ip, NSM_FORWARDER_LOG_LEVEL="WARNING")
    try:
        node.start()
        client, endpoint = pods.make(), pods.make()
        xcons = [
            remote_pair(
                f"r{i}", client, endpoint, u.a_ip, u.b_ip, "VXLAN", vni=100 + i, client_if=f"v{i}"
            ).outgoing
            for i in range(count)
        ]
        req, close = alternating(node.forwarder.socket, xcons)
        return {"request": summary(req), "close": summary(close)}
    finally:
        node.close()
        u.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="sequential cross-connects")
    parser.add_argument(
        "--batch", type=int, default=400, help="cross-connects per concurrency level"
    )
    parser.add_argument("--live", type=int, default=1000, help="live cross-connects for memory")
    parser.add_argument(
        "--scale", type=int, default=5000, help="live cross-connects for scale (0: skip)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default="benchmark.json", help="where to write the figures")
    parser.add_argument("--quick", action="store_true", help="smaller numbers (about 1 minute)")
    parser.add_argument(
        "--vpp-run",
        help="a command running a real VPP (CMD <runtime dir> <netns>, as NSM_TEST_VPP_RUN): "
        "adds the VPP driver's row",
    )
    args = parser.parse_args()
    if args.quick:
        args.count, args.batch, args.live, args.scale = 50, 100, 200, 0
    if not IS_ROOT:
        print("the benchmark needs root (network namespaces)", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"args": vars(args)}
    pods, loop = Pods(), BackgroundLoop()
    try:
        a, b = pods.make(), pods.make()
        creates, deletes = raw_floor(a.name, b.name, args.count)
        ip_create, ip_delete = ip_batch(a.name, b.name, args.count)
        out["floor"] = {
            "grpc_round_trip_p50_ms": statistics.median(grpc_floor.round_trips(args.count * 2)),
            "worker_round_trip_p50_ms": statistics.median(
                grpc_floor.worker_round_trips(args.count * 2)
            ),
            "netlink_create_p50_ms": statistics.median(creates),
            "netlink_delete_p50_ms": statistics.median(deletes),
            "ip_batch_create_ms": ip_create,
            "ip_batch_delete_ms": ip_delete,
        }
        node = start_node(loop, args.workers)
        try:
            local_runs(node, a, b, args, out)
            if args.scale:
                scale_runs(node, pods, args, out)
        finally:
            node.close()
        out["workers"] = {
            "1": throughput(loop, 1, a, b, args.batch),
            "2": throughput(loop, 2, a, b, args.batch),
        }
        out["remote_vxlan"] = remote_runs(loop, pods, min(args.count, 50))
        if args.vpp_run:
            from tests.benchmarks.vpp import vpp_row

            out["vpp"] = vpp_row(args.vpp_run, min(args.count, 50))
    finally:
        pods.cleanup()
        loop.close()
    report = Report(out)
    report.print()
    with open(args.json, "w") as f:
        json.dump({**out, "targets": report.targets()}, f, indent=2)
    print(f"figures written to {args.json}")
    return 0 if report.all_met() else 1


if __name__ == "__main__":
    sys.exit(main())
