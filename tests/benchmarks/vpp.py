"""The VPP driver's row of the benchmark: a local kernel<->kernel cross-connect through VPP, made
by the forwarder (driver vpp) and by the same calls made directly in one process (the two veth
pairs by raw netlink, the VPP calls by one ``vpp_papi`` client), side by side.

Needs a VPP: ``--vpp-run CMD`` (as ``NSM_TEST_VPP_RUN`` for the tests: ``CMD <runtime dir>
<netns>`` runs one in the foreground). Everything runs in a node namespace made for it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import tempfile
import time
from typing import Any

from nsm_forwarder.drivers.vpp.api import af_packet_args
from tests.benchmarks.floor import RawNetlink, attr, cstr, ifinfo
from tests.benchmarks.load import alternating, xcon
from tests.conftest import Node
from tests.helpers import BackgroundLoop, Pods, make_underlay
from tests.vpp.conftest import VppHost


def direct(vpp: VppHost, node: str, a: str, b: str, count: int) -> list[float]:
    """ms per cross-connect: two veth pairs (node end <-> pod end), an af_packet on each node
    end, tagged and up, xconnected both ways; then everything deleted again (not timed)."""
    nl = RawNetlink()
    fds = {name: os.open(f"/var/run/netns/{name}", os.O_RDONLY) for name in (node, a, b)}
    took: list[float] = []
    try:
        with vpp.client() as client:
            api = client.api
            for i in range(count):
                start = time.perf_counter()
                indexes: list[tuple[str, int]] = []
                for pod, ifindex in ((a, 30000 + 4 * i), (b, 30002 + 4 * i)):
                    host = f"dv{ifindex}"
                    peer = (
                        ifinfo(ifindex + 1)
                        + attr(3, cstr(f"p{i}"))
                        + attr(28, struct.pack("I", fds[pod]))
                    )
                    info = attr(1, cstr("veth")) + attr(2 | 0x8000, attr(1 | 0x8000, peer))
                    body = ifinfo(ifindex, 1, 1) + attr(3, cstr(host)) + attr(18 | 0x8000, info)
                    nl.request(fds[node], 16, 0x600, body)
                    nl.request(fds[pod], 16, 0, ifinfo(ifindex + 1, 1, 1))
                    r = api.af_packet_create_v3(**af_packet_args(host))
                    api.sw_interface_tag_add_del(is_add=True, sw_if_index=r.sw_if_index, tag=host)
                    api.sw_interface_set_flags(sw_if_index=r.sw_if_index, flags=1)
                    indexes.append((host, int(r.sw_if_index)))
                (_, x), (_, y) = indexes
                api.sw_interface_set_l2_xconnect(rx_sw_if_index=x, tx_sw_if_index=y, enable=True)
                api.sw_interface_set_l2_xconnect(rx_sw_if_index=y, tx_sw_if_index=x, enable=True)
                took.append((time.perf_counter() - start) * 1000)
                for host, _ in indexes:
                    api.af_packet_delete(host_if_name=host)
                for ifindex in (30000 + 4 * i, 30002 + 4 * i):
                    nl.delete(fds[node], ifindex)
    finally:
        nl.close()
        for fd in fds.values():
            os.close(fd)
    return took


def vpp_row(command: str, count: int) -> dict[str, Any]:
    """p50 of a Request through a forwarder of driver vpp, and of the same calls made directly."""
    u = make_underlay()
    runtime = tempfile.mkdtemp(prefix="nbv", dir="/tmp")
    vpp = VppHost(u.a, runtime, run=command)  # never the fake: this row is about a real VPP
    pods, loop = Pods(), BackgroundLoop()
    node: Node | None = None
    try:
        vpp.start()
        with vpp.client() as client:
            version = str(client.api.show_version().version)
        a, b = pods.make(), pods.make()
        by_hand = direct(vpp, u.a, a.name, b.name, count)
        node = Node(
            loop,
            u.a,
            NSM_FORWARDER_DRIVER="vpp",
            NSM_FORWARDER_SRC_IP=u.a_ip,
            NSM_FORWARDER_VPP_API_SOCKET=vpp.api_socket,
            NSM_FORWARDER_VPP_API_DIR=vpp.api_dir,
            NSM_FORWARDER_VPP_STATS_SOCKET=vpp.stats_socket,
            NSM_FORWARDER_LOG_LEVEL="WARNING",
        ).start()
        req, close = alternating(node.forwarder.socket, [xcon(i, a, b, "vb") for i in range(count)])
        return {
            "vpp_version": version,
            "request_p50_ms": statistics.median(req.latencies),
            "close_p50_ms": statistics.median(close.latencies),
            "direct_p50_ms": statistics.median(by_hand),
        }
    finally:
        if node is not None:
            node.close()
        pods.cleanup()
        loop.close()
        vpp.stop()
        u.delete()
        shutil.rmtree(runtime, ignore_errors=True)
