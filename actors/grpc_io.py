"""gRPC and socket plumbing under the Supervisor and the Registrar (no actor, no state).

- ``grpc_address(socket_type, address)``: the gRPC target of a unix socket path or HOST:PORT,
  both to listen on (the forwarder socket) and to dial (nsmd's registrar socket).
- ``socket_accepts(address, socket_type)``: whether a socket accepts a connection right now.
- ``read_stream(call, interrupt, each)``: read a server stream until it ends or is interrupted.
- ``wait_until_accepting(address, socket_type, waiting)``: poll until it does (tenacity).
- ``failure_reason(err)``: one line saying why a gRPC call or a wait failed.
Threads:  the asyncio loop of the main process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
import tenacity

CONNECT_TIMEOUT = 1.0
"""Seconds ``socket_accepts`` waits for a connection before answering no."""

POLL_INTERVAL = 0.1
"""Seconds between two tries of ``wait_until_accepting`` (upstream polls nsmd's socket so)."""

WAIT_LOG_INTERVAL = 60.0
"""While ``wait_until_accepting`` waits, it calls ``waiting()`` at most this often."""


def grpc_address(socket_type: str, address: str) -> str:
    """``unix://<absolute path>`` for a unix socket, the HOST:PORT itself for tcp."""
    if socket_type == "unix":
        return "unix://" + os.path.abspath(address)
    return address


async def socket_accepts(address: str, socket_type: str) -> bool:
    """Return whether the socket at ``address`` (a path, or HOST:PORT for tcp) exists and
    accepts a connection right now; the connection is closed at once."""
    writer: asyncio.StreamWriter | None = None
    try:
        if socket_type == "unix":
            if not os.path.exists(address):
                return False
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, writer = await asyncio.open_unix_connection(address)
        else:
            host, _, port = address.rpartition(":")
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, writer = await asyncio.open_connection(
                    host.strip("[]") or "localhost", int(port)
                )
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return True


async def wait_until_accepting(
    address: str, socket_type: str, waiting: Callable[[], None], every: float = WAIT_LOG_INTERVAL
) -> None:
    """Return once ``socket_accepts(address, socket_type)``, trying every POLL_INTERVAL; call
    ``waiting()`` (to say so in the log) at the first miss, then at most once per ``every`` s."""
    last: float | None = None

    def missed(_: tenacity.RetryCallState) -> None:
        nonlocal last
        now = time.monotonic()
        if last is None or now - last >= every:
            waiting()
            last = now

    await tenacity.AsyncRetrying(
        retry=tenacity.retry_if_result(lambda accepts: not accepts),
        wait=tenacity.wait_fixed(POLL_INTERVAL),
        before_sleep=missed,
    )(socket_accepts, address, socket_type)


async def read_stream(
    call: grpc.aio.UnaryStreamCall | grpc.aio.StreamStreamCall,
    interrupt: asyncio.Event,
    each: Callable[[], Awaitable[None]],
) -> str | None:
    """Read the responses of ``call`` (a grpc.aio streaming call), awaiting ``each()`` after
    every one, until the stream ends (return why, in one line) or ``interrupt`` is set (return
    None).

    The request side is never written to and never half-closed. Cancellation of the caller
    interrupts the read at once. The call is cancelled on the way out in every case.
    """
    interrupted = asyncio.ensure_future(interrupt.wait())
    try:
        while True:
            read = asyncio.ensure_future(call.read())
            try:
                await asyncio.wait({read, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                read.cancel()
                raise
            if not read.done():
                read.cancel()
                return None
            if read.cancelled():
                return "call cancelled by gRPC"
            err = read.exception()
            if isinstance(err, grpc.aio.AioRpcError):
                return failure_reason(err)
            if err is not None:
                raise err
            if read.result() is grpc.aio.EOF:
                return "stream closed by the server"
            await each()
    finally:
        interrupted.cancel()
        call.cancel()


def failure_reason(err: BaseException) -> str:
    """``CODE: details`` for a gRPC error, "timed out" for a timeout, else the error's text."""
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    if isinstance(err, TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__
