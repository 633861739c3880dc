"""Frontend: the gRPC API (grpc.aio) on the forwarder socket.

Accepts:  gRPC calls: Forwarder.Request / Close, MechanismsMonitor.MonitorMechanisms,
          MonitorCrossConnect.MonitorCrossConnects, grpc.health.v1.Health.
Sends:    ApplyXconn / CloseXconn to the ConnectionActor of the cross-connect's id, through
          :class:`~nsm_forwarder.actors.connections.Connections`; Subscribe to the Monitor.
Guarantees: decodes and routes only (validation lives in drivers.plan, run by the
          ConnectionActor); every error reaches the client as a gRPC status with a message;
          monitor streams stay open until the client leaves or the server stops; each
          subscriber has a bounded queue and is dropped with RESOURCE_EXHAUSTED if it overflows.
Bounds:   at most ``max_concurrent`` Request/Close calls in flight (a call whose client left
          counts until its actor has answered), ``max_subscribers`` streams of each monitor
          service, ``max_cross_connects`` live ids (a Request for a known id is an update and
          is always let through); each refusal is RESOURCE_EXHAUSTED naming the setting. A
          Request carries its gRPC deadline to its ConnectionActor, which rolls it back if the
          deadline passed before it committed (connection.py).
Threads:  the asyncio loop of the main process; never blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pykka
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError

from nsm_forwarder.actors import tracing
from nsm_forwarder.actors.connections import Connections
from nsm_forwarder.actors.faults import CRASH, HANG, Injector
from nsm_forwarder.actors.logs import XCON_ID
from nsm_forwarder.actors.messages import (
    ApplyXconn,
    CloseXconn,
    Subscribe,
    XconnApplied,
)
from nsm_forwarder.actors.metrics import Metrics, mechanism_of
from nsm_forwarder.actors.monitor import event_bytes
from nsm_forwarder.actors.runtime import Link
from nsm_forwarder.drivers.errors import ForwarderError
from nsm_forwarder.proto import (
    connection_pb2,
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2,
    forwarder_pb2_grpc,
)

log = logging.getLogger(__name__)

#: The gRPC service of Request and Close.
FORWARDER_SERVICE = "forwarder.Forwarder"
#: Events a subscriber may have queued before it is dropped.
SUBSCRIBER_QUEUE = 1024
_OVERFLOW = b""
#: How long a new subscriber waits for the Monitor's snapshot (the watchdog replaces a
#: Monitor that does not answer; the client then subscribes again).
SUBSCRIBE_TIMEOUT = 5.0
_ALWAYS = 1 << 62  # sequence number of synthesized events: every subscriber takes them
#: Longest status message sent: it travels as a header (grpc-message), and a client refuses
#: headers beyond 8 KiB, so an error quoting a huge request value would never reach it.
MAX_STATUS_MESSAGE = 1024


async def inject(faults: Injector, context: grpc.aio.ServicerContext, what: str) -> None:
    """Frontend faults, per RPC: a crash or an error ends the call (UNAVAILABLE / the code);
    a hang never answers (the client's deadline fires)."""
    try:
        action = await faults.acheck(what)
    except ForwarderError as exc:
        await abort_with(context, exc)
        return
    if action is CRASH:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the frontend crashed (injected)")
    if action is HANG:
        await asyncio.Event().wait()


def grpc_code_of(exc: BaseException) -> str:
    """The name of the gRPC status code :func:`abort_with` answers ``exc`` with."""
    if isinstance(exc, ForwarderError):
        return exc.code if hasattr(grpc.StatusCode, exc.code) else "INTERNAL"
    if isinstance(exc, pykka.ActorDeadError):
        return "UNAVAILABLE"
    return "INTERNAL"


def status_message(message: str) -> str:
    """``message`` cut to :data:`MAX_STATUS_MESSAGE` characters, saying how much was cut."""
    if len(message) <= MAX_STATUS_MESSAGE:
        return message
    cut = len(message) - MAX_STATUS_MESSAGE
    return f"{message[:MAX_STATUS_MESSAGE]}... ({cut} more characters)"


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Turn any exception into the matching gRPC status (and end the call)."""
    if isinstance(exc, ForwarderError):
        code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL)
        await context.abort(code, status_message(exc.message))
    if isinstance(exc, pykka.ActorDeadError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the actor was restarting; try again")
    log.error("unexpected error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, status_message(f"{type(exc).__name__}: {exc}"))


class Undecodable:
    """A request body that is not a CrossConnect; its handler answers INVALID_ARGUMENT (gRPC's
    own deserializer would end the call with UNKNOWN)."""

    def __init__(self, error: str) -> None:
        self.error = error


def decode_xcon(data: bytes) -> crossconnect_pb2.CrossConnect | Undecodable:
    try:
        return crossconnect_pb2.CrossConnect.FromString(data)
    except DecodeError as exc:
        return Undecodable(str(exc))


class StreamLimit:
    """At most ``limit`` streams of one ``kind`` open at once (each holds a task and what it
    waits on): :meth:`hold` refuses one more with RESOURCE_EXHAUSTED naming the setting."""

    def __init__(self, kind: str, limit: int, setting: str = "max_monitor_subscribers") -> None:
        self.kind = kind
        self.limit = limit
        self.setting = setting
        self.open = 0

    @contextlib.asynccontextmanager
    async def hold(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Count one stream for the ``async with`` body (ends the call if none is free)."""
        if self.open >= self.limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.open} {self.kind} streams open, the limit ({self.setting} = {self.limit})",
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


class LimitReached(ForwarderError):
    """A bound of the forwarder is reached (the message names its setting); retry later."""

    code = "RESOURCE_EXHAUSTED"
    retriable = True


class ForwarderService(forwarder_pb2_grpc.ForwarderServicer):
    def __init__(
        self,
        connections: Connections,
        metrics: Metrics,
        faults: Injector | None = None,
        *,
        max_concurrent: int = 1024,
        max_cross_connects: int = 0,
    ) -> None:
        self.connections = connections
        self.metrics = metrics
        self.faults = faults or Injector("frontend", ())
        self.max_concurrent = max_concurrent
        self.max_cross_connects = max_cross_connects
        #: Request/Close calls whose actor has not answered yet (their clients may have left)
        self.in_flight: set[asyncio.Future[Any]] = set()
        #: new ids (no Store row when admitted) whose first Request is in flight
        self._admitting: set[str] = set()

    def _admit(self, kind: str, xcon_id: str) -> bool:
        """Check the bounds for one call; True when it is the Request of a new id (counted in
        ``_admitting`` until it is answered)."""
        if len(self.in_flight) >= self.max_concurrent:
            raise LimitReached(
                f"{len(self.in_flight)} Request/Close calls in flight, the limit "
                f"(max_concurrent_rpcs = {self.max_concurrent}); try again later"
            )
        if kind != "request" or not self.max_cross_connects:
            return False
        store = self.connections.store
        if store.has(xcon_id) or xcon_id in self._admitting:
            return False  # an update, or the same new id in flight twice: no new cross-connect
        live = store.count() + sum(1 for i in self._admitting if not store.has(i))
        if live >= self.max_cross_connects:
            raise LimitReached(
                f"{live} live cross-connects, the limit (max_cross_connects = "
                f"{self.max_cross_connects}); close one first (an update of a known id works)"
            )
        self._admitting.add(xcon_id)
        return True

    def _finished(self, xcon_id: str, new: bool, work: asyncio.Future[Any]) -> None:
        self.in_flight.discard(work)
        if new:
            self._admitting.discard(xcon_id)
        if not work.cancelled() and work.exception() is not None:
            log.debug("%s answered after its caller left: %s", xcon_id, work.exception())

    async def _route(
        self,
        kind: str,
        request: crossconnect_pb2.CrossConnect | Undecodable,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """Send the request to its ConnectionActor; errors end the call with their status."""
        await inject(self.faults, context, kind)
        if isinstance(request, Undecodable):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"not a crossconnect.CrossConnect message: {request.error}",
            )
        assert isinstance(request, crossconnect_pb2.CrossConnect)  # abort() raised otherwise
        if not request.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: must not be empty")
        XCON_ID.set(request.id)  # this call's task: its log records carry the id
        if tracing.enabled:
            attributes = {
                "nsm.cross_connect.id": request.id,
                "nsm.mechanism": mechanism_of(request),
            }
            method = "Request" if kind == "request" else "Close"
            metadata = context.invocation_metadata()
            with tracing.rpc_span(FORWARDER_SERVICE, method, metadata, attributes) as span:
                return await self._answer(kind, request, context, span)
        return await self._answer(kind, request, context)

    async def _answer(
        self,
        kind: str,
        request: crossconnect_pb2.CrossConnect,
        context: grpc.aio.ServicerContext,
        span: Any = None,
    ) -> Any:
        remaining = context.time_remaining()
        deadline = 0.0 if remaining is None else time.monotonic() + remaining
        message: ApplyXconn | CloseXconn
        if kind == "request":
            message = ApplyXconn(xcon=request.SerializeToString(), deadline=deadline)
        else:
            message = CloseXconn(xcon=request.SerializeToString())
        start = time.perf_counter()
        code = "OK"
        try:
            new = self._admit(kind, request.id)
            # the actor's work is not cancelled with the call: it runs to its end (a Request
            # past its deadline rolls itself back) and counts as in flight until then
            work = asyncio.ensure_future(self.connections.ask(request.id, message))
            self.in_flight.add(work)
            work.add_done_callback(functools.partial(self._finished, request.id, new))
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # the client went away, or its deadline passed
            late = deadline and time.monotonic() >= deadline
            code = "DEADLINE_EXCEEDED" if late else "CANCELLED"
            raise
        except Exception as exc:
            code = grpc_code_of(exc)
            await abort_with(context, exc)
            raise
        finally:
            self.metrics.observe_rpc(kind, mechanism_of(request), code, time.perf_counter() - start)
            if span is not None:
                tracing.set_grpc_code(span, code)

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


def add_forwarder_service(service: ForwarderService, server: grpc.aio.Server) -> None:
    """Serve forwarder.Forwarder like the generated code would, but decoding requests with
    :func:`decode_xcon`, so a corrupt one gets INVALID_ARGUMENT."""
    handlers = {
        "Request": grpc.unary_unary_rpc_method_handler(
            service.Request,
            request_deserializer=decode_xcon,
            response_serializer=crossconnect_pb2.CrossConnect.SerializeToString,
        ),
        "Close": grpc.unary_unary_rpc_method_handler(
            service.Close,
            request_deserializer=decode_xcon,
            response_serializer=empty_pb2.Empty.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("forwarder.Forwarder", handlers),)
    )


class MechanismsService(forwarder_pb2_grpc.MechanismsMonitorServicer):
    """MonitorMechanisms: the update at once, then the stream stays open until the client
    leaves or the server stops. When the last open stream ends while we keep running (nsmd
    dropped it: nsmd then takes us for dead), ``on_unwatched`` is called."""

    def __init__(
        self,
        update: forwarder_pb2.MechanismUpdate,
        stopping: asyncio.Event,
        faults: Injector | None = None,
        on_unwatched: Callable[[], None] = lambda: None,
        *,
        max_streams: int = 64,
    ) -> None:
        self.update = update
        self.stopping = stopping
        self.faults = faults or Injector("frontend", ())
        self.on_unwatched = on_unwatched
        self.streams = StreamLimit("MonitorMechanisms", max_streams)

    async def MonitorMechanisms(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[forwarder_pb2.MechanismUpdate]:
        await inject(self.faults, context, "MonitorMechanisms")
        try:
            async with self.streams.hold(context):
                yield self.update
                await self.stopping.wait()
        finally:
            if not self.streams.open and not self.stopping.is_set():
                self.on_unwatched()


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
    """Subscriptions live here; numbered events come from the Monitor through :meth:`deliver`.

    Build it first (inside the running loop), start the Monitor with ``deliver``, then
    :meth:`attach` the Monitor's Link. It keeps the view every subscriber has been sent (the
    state after the last event); after a Monitor restart, :meth:`resync` turns the difference
    between that view and the new Monitor's state into UPDATE / DELETE events, so no subscriber
    misses a change.
    """

    def __init__(
        self,
        stopping: asyncio.Event,
        faults: Injector | None = None,
        *,
        queue_limit: int = SUBSCRIBER_QUEUE,
        max_subscribers: int = 64,
    ) -> None:
        self.stopping = stopping
        self.faults = faults or Injector("frontend", ())
        self.queues: dict[str, asyncio.Queue[tuple[int, bytes]]] = {}
        self._ids = itertools.count(1)
        self.loop = asyncio.get_running_loop()
        self.monitor: Link | None = None
        self.queue_limit = queue_limit
        self.max_subscribers = max_subscribers
        self.last_seq = 0
        self.view: dict[str, bytes] = {}

    def attach(self, monitor: Link) -> None:
        self.monitor = monitor

    def deliver(self, seq: int, event: bytes, changed: dict[str, bytes | None]) -> None:
        """Called by the Monitor thread; never blocks. ``changed``: the cross-connects the
        event changes (id -> bytes, None for a delete), the Monitor's own bytes objects."""
        self.loop.call_soon_threadsafe(self._fan_out, seq, event, changed)

    def _fan_out(self, seq: int, event: bytes, changed: dict[str, bytes | None]) -> None:
        if seq <= self.last_seq:
            return  # a late event of a Monitor that was replaced
        self.last_seq = seq
        for xcon_id, data in changed.items():
            if data is None:
                self.view.pop(xcon_id, None)
            else:
                self.view[xcon_id] = data
        for sub_id in list(self.queues):
            self._enqueue(sub_id, seq, event)

    def resync(self, xcons: list[bytes]) -> None:
        """After a Monitor restart: send every subscriber what changed while it was down."""
        now = {crossconnect_pb2.CrossConnect.FromString(x).id: x for x in xcons}
        events = []
        for xcon_id, data in self.view.items():
            if xcon_id not in now:
                xcon = crossconnect_pb2.CrossConnect.FromString(data)
                events.append(event_bytes(crossconnect_pb2.DELETE, [xcon]))
        for xcon_id, data in now.items():
            if self.view.get(xcon_id) != data:
                xcon = crossconnect_pb2.CrossConnect.FromString(data)
                events.append(event_bytes(crossconnect_pb2.UPDATE, [xcon]))
        self.view = dict(now)
        for event in events:
            for sub_id in list(self.queues):
                self._enqueue(sub_id, _ALWAYS, event)
        if events:
            log.info("monitor restarted: %d missed changes sent to subscribers", len(events))

    def _enqueue(self, sub_id: str, seq: int, event: bytes) -> None:
        queue = self.queues.get(sub_id)
        if queue is None:
            return
        if queue.qsize() >= self.queue_limit - 1:
            queue.put_nowait((_ALWAYS, _OVERFLOW))
            del self.queues[sub_id]
            return
        queue.put_nowait((seq, event))

    async def MonitorCrossConnects(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[crossconnect_pb2.CrossConnectEvent]:
        await inject(self.faults, context, "MonitorCrossConnects")
        if self.monitor is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the forwarder is starting")
        assert self.monitor is not None
        if len(self.queues) >= self.max_subscribers:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(self.queues)} MonitorCrossConnects subscribers, the limit "
                f"(max_monitor_subscribers = {self.max_subscribers})",
            )
        sub_id = f"sub-{next(self._ids)}"
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        # queue from now on: events numbered up to `upto` are already in the initial state
        self.queues[sub_id] = queue
        try:
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    upto, initial = await self.monitor.ask(Subscribe(sub_id=sub_id))
            except (pykka.ActorDeadError, TimeoutError):
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "the monitor is restarting; subscribe again"
                )
            yield crossconnect_pb2.CrossConnectEvent.FromString(initial)
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                while True:
                    get = asyncio.ensure_future(queue.get())
                    await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not get.done():
                        get.cancel()
                        return
                    seq, event = get.result()
                    if seq <= upto:
                        continue
                    if event == _OVERFLOW:
                        log.warning("cross-connect subscriber %s too slow; dropping it", sub_id)
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"subscriber fell more than {self.queue_limit} events behind "
                            "(subscriber_queue); subscribe again for the current state",
                        )
                    yield crossconnect_pb2.CrossConnectEvent.FromString(event)
            finally:
                stop.cancel()
        finally:
            self.queues.pop(sub_id, None)
