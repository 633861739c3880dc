"""The cost of the two hops every Request takes besides the kernel's work.

- :func:`round_trips`: an empty unary ``Forwarder.Request`` (the server echoes the request)
  between two Python processes over a unix socket, with the same grpcio the forwarder uses.
  ``python -m tests.benchmarks.grpc_floor SOCKET`` is the server.
- :func:`worker_round_trips`: an empty call (``ping``) to a worker process of the forwarder's
  own pool, which is where every netlink call runs.

A Request to a forwarder of this design costs at least the netlink floor plus both."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time

import grpc

from nsm_forwarder.proto import crossconnect_pb2, forwarder_pb2_grpc


class Echo(forwarder_pb2_grpc.ForwarderServicer):
    async def Request(self, request: object, context: object) -> object:  # noqa: N802
        return request


async def serve(path: str) -> None:
    server = grpc.aio.server()
    forwarder_pb2_grpc.add_ForwarderServicer_to_server(Echo(), server)
    server.add_insecure_port("unix://" + path)
    await server.start()
    await server.wait_for_termination()


def worker_round_trips(count: int) -> list[float]:
    """Milliseconds of ``count`` empty calls to one worker of a WorkerPool (kernel driver)."""
    from nsm_forwarder.actors.workers import WorkerPool

    pool = WorkerPool(1, "kernel", init={"owner": "bench", "src_ip": "127.0.0.1"})
    pool.start()
    try:
        for _ in range(20):
            pool.call("ping")
        took = []
        for _ in range(count):
            start = time.perf_counter()
            pool.call("ping")
            took.append((time.perf_counter() - start) * 1000)
        return took
    finally:
        pool.stop()


def round_trips(count: int) -> list[float]:
    """Milliseconds of ``count`` empty Requests to an echo server in another process."""
    path = os.path.join(tempfile.mkdtemp(prefix="ngf", dir="/tmp"), "echo.sock")
    server = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.grpc_floor", path])
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        return asyncio.run(_client(path, count))
    finally:
        server.kill()
        server.wait(10)
        os.unlink(path) if os.path.exists(path) else None


async def _client(path: str, count: int) -> list[float]:
    async with grpc.aio.insecure_channel("unix://" + path) as channel:
        stub = forwarder_pb2_grpc.ForwarderStub(channel)
        xcon = crossconnect_pb2.CrossConnect(id="1", payload="IP")
        for _ in range(20):
            await stub.Request(xcon, timeout=10)
        took = []
        for _ in range(count):
            start = time.perf_counter()
            await stub.Request(xcon, timeout=10)
            took.append((time.perf_counter() - start) * 1000)
        return took


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
