"""Load on a real forwarder over its gRPC socket: latencies, sustained rates, memory, scale.

Clients are ``grpc.aio`` stubs on one event loop (concurrency = requests in flight), so the
benchmark itself is not the bottleneck. Cross-connect ``i`` joins ``b<i>`` in pod A to ``c<i>``
in pod B with the /30 :func:`tests.benchmarks.floor.address` gives it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.protobuf import empty_pb2

from nsm_forwarder.proto import crossconnect_pb2, crossconnect_pb2_grpc, forwarder_pb2_grpc
from tests.benchmarks.floor import address
from tests.helpers import Pod, local_xcon


def xcon(i: int, a: Pod, b: Pod, prefix: str = "bx") -> crossconnect_pb2.CrossConnect:
    return local_xcon(
        f"{prefix}-{i}",
        a,
        b,
        src_name=f"b{i}",
        dst_name=f"c{i}",
        src_ip=f"{address(i, 1)}/30",
        dst_ip=f"{address(i, 2)}/30",
    )


@dataclass
class Run:
    """Latencies (ms) of one batch of calls and its wall time (s)."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


async def _calls(
    socket_path: str, method: str, xcons: list[crossconnect_pb2.CrossConnect], concurrency: int
) -> Run:
    run = Run()
    queue = list(reversed(xcons))
    async with grpc.aio.insecure_channel("unix://" + socket_path) as channel:
        stub = forwarder_pb2_grpc.ForwarderStub(channel)
        call = getattr(stub, method)

        async def client() -> None:
            while queue:
                x = queue.pop()
                start = time.perf_counter()
                await call(x, timeout=60)
                run.latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        run.wall = time.perf_counter() - start
    return run


def calls(
    socket_path: str,
    method: str,
    xcons: Iterable[crossconnect_pb2.CrossConnect],
    concurrency: int = 1,
) -> Run:
    """``method`` (Request or Close) for each cross-connect, ``concurrency`` in flight."""
    return asyncio.run(_calls(socket_path, method, list(xcons), concurrency))


def alternating(socket_path: str, xcons: list[crossconnect_pb2.CrossConnect]) -> tuple[Run, Run]:
    """Request then Close each cross-connect in turn (nothing else in flight)."""

    async def go() -> tuple[Run, Run]:
        req, close = Run(), Run()
        async with grpc.aio.insecure_channel("unix://" + socket_path) as channel:
            stub = forwarder_pb2_grpc.ForwarderStub(channel)
            began = time.perf_counter()
            for x in xcons:
                start = time.perf_counter()
                await stub.Request(x, timeout=60)
                req.latencies.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await stub.Close(x, timeout=60)
                close.latencies.append((time.perf_counter() - start) * 1000)
            req.wall = close.wall = time.perf_counter() - began
        return req, close

    return asyncio.run(go())


def initial_transfer(socket_path: str) -> tuple[float, int]:
    """(seconds until a new MonitorCrossConnects subscriber has its initial transfer, how
    many cross-connects it carried)."""

    async def go() -> tuple[float, int]:
        async with grpc.aio.insecure_channel("unix://" + socket_path) as channel:
            stub = crossconnect_pb2_grpc.MonitorCrossConnectStub(channel)
            start = time.perf_counter()
            stream = stub.MonitorCrossConnects(empty_pb2.Empty(), timeout=60)
            first = await stream.read()
            took = time.perf_counter() - start
            stream.cancel()
            return took, len(first.cross_connects)

    return asyncio.run(go())


def pss_kib(pid: int, field: str = "Pss") -> int:
    """Proportional set size of ``pid`` and all its descendants, KiB. ``field="Pss_Anon"``:
    only their anonymous memory (heaps, stacks), which other processes on the machine do not
    change: the shared libraries' pages in PSS are divided among every process mapping them,
    so PSS moves by a few MiB as other Python processes come and go."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(f"{field}:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and all its descendants, and by this
    process (the clients, and the nsmd stand-in that reads the forwarder's events)."""
    ticks = 0
    for p in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    own = os.times()
    return ticks / os.sysconf("SC_CLK_TCK") + own.user + own.system


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
