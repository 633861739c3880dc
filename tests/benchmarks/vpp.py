"""The VPP driver's row of the benchmark: a local kernel<->kernel cross-connect through VPP, made
by the forwarder (driver vpp) and by the same calls made directly in one process (the two veth
pairs by raw netlink, the VPP calls by one ``vpp_papi`` client), side by side.

The two alternate, one cross-connect each in turn, so both meet the same machine: most of either
is VPP creating its af_packet sockets, three kernel RCU grace periods each (bind and the two
rings), whose length swings with whatever else the machine runs (from well under a millisecond
to about 16 ms here), so two runs minutes apart are not comparable.

Needs a VPP: ``--vpp-run CMD`` (as ``NSM_TEST_VPP_RUN`` for the tests: ``CMD <runtime dir>
<netns>`` runs one in the foreground). Everything runs in a node namespace made for it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import struct
import tempfile
import time
from typing import Any

import grpc

from nsm_forwarder.drivers.vpp.api import af_packet_args
from nsm_forwarder.proto import forwarder_pb2_grpc
from tests.benchmarks.floor import RawNetlink, attr, cstr, ifinfo
from tests.benchmarks.load import Run, xcon
from tests.conftest import Node
from tests.helpers import BackgroundLoop, Pod, Pods, make_underlay
from tests.vpp.conftest import VppHost


class Direct:
    """The driver's VPP and veth calls made directly: :meth:`make` builds cross-connect ``i``
    (two veth pairs node end <-> pod end, an af_packet on each node end, tagged and up,
    xconnected both ways) and times it; :meth:`clear` deletes it again (not timed)."""

    def __init__(self, vpp: VppHost, node: str, a: str, b: str) -> None:
        self.vpp, self.node, self.pods = vpp, node, (a, b)
        self.nl = RawNetlink()
        self.fds: dict[str, int] = {}
        self._client: Any = None
        self.made: list[tuple[str, int]] = []

    def __enter__(self) -> Direct:
        self.fds = {n: os.open(f"/var/run/netns/{n}", os.O_RDONLY) for n in (self.node, *self.pods)}
        self._client = self.vpp.client()
        self.api = self._client.__enter__().api
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(None, None, None)
        self.nl.close()
        for fd in self.fds.values():
            os.close(fd)

    def make(self, i: int) -> float:
        """Build cross-connect ``i``; ms it took."""
        api, nl, fds = self.api, self.nl, self.fds
        start = time.perf_counter()
        indexes: list[tuple[str, int]] = []
        for pod, ifindex in ((self.pods[0], 30000 + 4 * i), (self.pods[1], 30002 + 4 * i)):
            host = f"dv{ifindex}"
            peer = (
                ifinfo(ifindex + 1) + attr(3, cstr(f"p{i}")) + attr(28, struct.pack("I", fds[pod]))
            )
            info = attr(1, cstr("veth")) + attr(2 | 0x8000, attr(1 | 0x8000, peer))
            body = ifinfo(ifindex, 1, 1) + attr(3, cstr(host)) + attr(18 | 0x8000, info)
            nl.request(fds[self.node], 16, 0x600, body)
            nl.request(fds[pod], 16, 0, ifinfo(ifindex + 1, 1, 1))
            r = api.af_packet_create_v3(**af_packet_args(host))
            api.sw_interface_tag_add_del(is_add=True, sw_if_index=r.sw_if_index, tag=host)
            api.sw_interface_set_flags(sw_if_index=r.sw_if_index, flags=1)
            indexes.append((host, int(r.sw_if_index)))
        (_, x), (_, y) = indexes
        api.sw_interface_set_l2_xconnect(rx_sw_if_index=x, tx_sw_if_index=y, enable=True)
        api.sw_interface_set_l2_xconnect(rx_sw_if_index=y, tx_sw_if_index=x, enable=True)
        took = (time.perf_counter() - start) * 1000
        self.made = indexes
        return took

    def clear(self, i: int) -> None:
        for host, _ in self.made:
            self.api.af_packet_delete(host_if_name=host)
        for ifindex in (30000 + 4 * i, 30002 + 4 * i):
            self.nl.delete(self.fds[self.node], ifindex)
        self.made = []


def side_by_side(socket_path: str, direct: Direct, a: Pod, b: Pod, count: int) -> tuple[Run, ...]:
    """For each i: cross-connect i made directly (then deleted), then a Request and a Close of
    cross-connect i through the forwarder; (direct, Request, Close) latencies."""

    async def go() -> tuple[Run, ...]:
        by_hand, req, close = Run(), Run(), Run()
        async with grpc.aio.insecure_channel("unix://" + socket_path) as channel:
            stub = forwarder_pb2_grpc.ForwarderStub(channel)
            for i in range(count):
                by_hand.latencies.append(direct.make(i))
                direct.clear(i)
                x = xcon(i, a, b, "vb")
                start = time.perf_counter()
                await stub.Request(x, timeout=60)
                req.latencies.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await stub.Close(x, timeout=60)
                close.latencies.append((time.perf_counter() - start) * 1000)
        return by_hand, req, close

    return asyncio.run(go())


def vpp_row(command: str, count: int) -> dict[str, Any]:
    """p50 of a Request through a forwarder of driver vpp, and of the same calls made directly,
    the two taking turns."""
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
        with Direct(vpp, u.a, a.name, b.name) as direct:
            by_hand, req, close = side_by_side(node.forwarder.socket, direct, a, b, count)
        return {
            "vpp_version": version,
            "request_p50_ms": statistics.median(req.latencies),
            "close_p50_ms": statistics.median(close.latencies),
            "direct_p50_ms": statistics.median(by_hand.latencies),
            # paired: what the forwarder adds to the same work at the same moment
            "request_minus_direct_p50_ms": statistics.median(
                r - d for r, d in zip(req.latencies, by_hand.latencies, strict=True)
            ),
        }
    finally:
        if node is not None:
            node.close()
        pods.cleanup()
        loop.close()
        vpp.stop()
        u.delete()
        shutil.rmtree(runtime, ignore_errors=True)
