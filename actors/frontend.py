"""Frontend: the gRPC API (grpc.aio) on the forwarder socket.

Accepts:  gRPC calls: Forwarder.Request / Close, MechanismsMonitor.MonitorMechanisms,
          MonitorCrossConnect.MonitorCrossConnects, grpc.health.v1.Health.
Sends:    ApplyXconn / CloseXconn to the ConnectionActor of the cross-connect's id (created on
          demand, stopped when it holds nothing); Subscribe / Unsubscribe to the Monitor.
Guarantees: decodes and routes only (validation lives in drivers.plan, run by the
          ConnectionActor); every error reaches the client as a gRPC status with a message;
          monitor streams stay open until the client leaves or the server stops; each
          subscriber has a bounded queue and is dropped with RESOURCE_EXHAUSTED if it overflows.
Threads:  the asyncio loop of the main process; never blocks it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pykka
from google.protobuf import empty_pb2

from nsm_forwarder.actors.connection import ConnectionActor
from nsm_forwarder.actors.messages import (
    ApplyXconn,
    CloseXconn,
    QueryIdle,
    Subscribe,
    Unsubscribe,
    XconnApplied,
)
from nsm_forwarder.actors.metrics import Metrics, mechanism_of
from nsm_forwarder.actors.runtime import ask, tell
from nsm_forwarder.actors.store import Record, Store
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.errors import ForwarderError
from nsm_forwarder.proto import (
    connection_pb2,
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2,
    forwarder_pb2_grpc,
)

log = logging.getLogger(__name__)

#: Events a subscriber may have queued before it is dropped.
SUBSCRIBER_QUEUE = 1024
_OVERFLOW = b""


class Connections:
    """id -> ConnectionActor, owned by the asyncio loop (so routing needs no lock)."""

    def __init__(
        self, pool: WorkerPool, monitor: pykka.ActorRef[Any], store: Store, mtu: int
    ) -> None:
        self.pool = pool
        self.monitor = monitor
        self.store = store
        self.mtu = mtu
        self._actors: dict[str, pykka.ActorRef[Any]] = {}
        self._in_flight: dict[str, int] = {}

    def restore(self, record: Record) -> None:
        """Start the actor of a cross-connect restored from the Store (before serving)."""
        self._actors[record.id] = ConnectionActor.start(
            record.id, self.pool, self.monitor, self.store, self.mtu, record
        )

    async def ask(self, xcon_id: str, message: Any) -> Any:
        ref = self._actors.get(xcon_id)
        if ref is None or not ref.is_alive():
            ref = ConnectionActor.start(xcon_id, self.pool, self.monitor, self.store, self.mtu)
            self._actors[xcon_id] = ref
        self._in_flight[xcon_id] = self._in_flight.get(xcon_id, 0) + 1
        try:
            return await ask(ref, message)
        finally:
            self._in_flight[xcon_id] -= 1
            if self._in_flight[xcon_id] == 0:
                await self._reap(xcon_id, ref)

    async def _reap(self, xcon_id: str, ref: pykka.ActorRef[Any]) -> None:
        """Stop the actor of an id that holds nothing and has nothing queued."""
        try:
            idle = await ask(ref, QueryIdle())
        except pykka.ActorDeadError:
            idle = True
        if idle and self._in_flight.get(xcon_id) == 0 and self._actors.get(xcon_id) is ref:
            del self._actors[xcon_id]
            del self._in_flight[xcon_id]
            ref.stop(block=False)

    def __len__(self) -> int:
        return len(self._actors)

    def stop(self) -> None:
        for ref in self._actors.values():
            ref.stop(block=False)
        self._actors.clear()


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Turn any exception into the matching gRPC status (and end the call)."""
    if isinstance(exc, ForwarderError):
        code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL)
        await context.abort(code, exc.message)
    if isinstance(exc, pykka.ActorDeadError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the forwarder is shutting down")
    log.error("unexpected error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


class ForwarderService(forwarder_pb2_grpc.ForwarderServicer):
    def __init__(self, connections: Connections, metrics: Metrics) -> None:
        self.connections = connections
        self.metrics = metrics

    async def _route(
        self, kind: str, request: crossconnect_pb2.CrossConnect, context: grpc.aio.ServicerContext
    ) -> Any:
        """Send the request to its ConnectionActor; errors end the call with their status."""
        if not request.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: must not be empty")
        message = (ApplyXconn if kind == "request" else CloseXconn)(
            xcon=request.SerializeToString()
        )
        start = time.perf_counter()
        result = "OK"
        try:
            return await self.connections.ask(request.id, message)
        except Exception as exc:
            result = exc.code if isinstance(exc, ForwarderError) else "UNAVAILABLE"
            await abort_with(context, exc)
            raise
        finally:
            self.metrics.observe_rpc(
                kind, mechanism_of(request), result, time.perf_counter() - start
            )

    async def Request(
        self, request: crossconnect_pb2.CrossConnect, context: grpc.aio.ServicerContext
    ) -> crossconnect_pb2.CrossConnect:
        reply: XconnApplied = await self._route("request", request, context)
        return crossconnect_pb2.CrossConnect.FromString(reply.xcon)

    async def Close(
        self, request: crossconnect_pb2.CrossConnect, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._route("close", request, context)
        return empty_pb2.Empty()


class MechanismsService(forwarder_pb2_grpc.MechanismsMonitorServicer):
    def __init__(self, update: forwarder_pb2.MechanismUpdate, stopping: asyncio.Event) -> None:
        self.update = update
        self.stopping = stopping

    async def MonitorMechanisms(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[forwarder_pb2.MechanismUpdate]:
        yield self.update
        await self.stopping.wait()


def mechanism_update(
    local: tuple[str, ...], remote: tuple[str, ...], src_ip: str
) -> forwarder_pb2.MechanismUpdate:
    """What MonitorMechanisms advertises: local types bare, remote types with ``src_ip``."""
    return forwarder_pb2.MechanismUpdate(
        local_mechanisms=[connection_pb2.Mechanism(type=t) for t in local],
        remote_mechanisms=[
            connection_pb2.Mechanism(type=t, parameters={"src_ip": src_ip}) for t in remote
        ],
    )


class CrossConnectMonitorService(crossconnect_pb2_grpc.MonitorCrossConnectServicer):
    """Subscriptions live here; events come from the Monitor actor through :meth:`deliver`.

    Build it first (inside the running loop), start the Monitor with ``deliver``, then
    :meth:`attach` the Monitor.
    """

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.queues: dict[str, asyncio.Queue[bytes]] = {}
        self._ids = itertools.count(1)
        self.loop = asyncio.get_running_loop()
        self.monitor: pykka.ActorRef[Any] | None = None
        self.queue_limit = SUBSCRIBER_QUEUE

    def attach(self, monitor: pykka.ActorRef[Any]) -> None:
        self.monitor = monitor

    def deliver(self, sub_id: str, event: bytes) -> None:
        """Called by the Monitor thread; never blocks."""
        self.loop.call_soon_threadsafe(self._enqueue, sub_id, event)

    def _enqueue(self, sub_id: str, event: bytes) -> None:
        queue = self.queues.get(sub_id)
        if queue is None:
            return
        if queue.qsize() >= self.queue_limit - 1:
            queue.put_nowait(_OVERFLOW)
            del self.queues[sub_id]
            return
        queue.put_nowait(event)

    async def MonitorCrossConnects(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[crossconnect_pb2.CrossConnectEvent]:
        if self.monitor is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the forwarder is starting")
        assert self.monitor is not None
        sub_id = f"sub-{next(self._ids)}"
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queues[sub_id] = queue
        try:
            initial = await ask(self.monitor, Subscribe(sub_id=sub_id))
            yield crossconnect_pb2.CrossConnectEvent.FromString(initial)
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                while True:
                    get = asyncio.ensure_future(queue.get())
                    await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not get.done():
                        get.cancel()
                        return
                    event = get.result()
                    if event == _OVERFLOW:
                        log.warning("cross-connect subscriber %s too slow; dropping it", sub_id)
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"subscriber fell more than {self.queue_limit} events behind",
                        )
                    yield crossconnect_pb2.CrossConnectEvent.FromString(event)
            finally:
                stop.cancel()
        finally:
            self.queues.pop(sub_id, None)
            try:
                tell(self.monitor, Unsubscribe(sub_id=sub_id))
            except pykka.ActorDeadError:
                pass
