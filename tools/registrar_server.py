"""RegistrarServer: a protocol-level stand-in for nsmd's forwarder registrar.

Used by `nsm-forwarder demo` (no nsmd needed) and by tests. It mirrors nsmd's side of the
contract (spec §4.4, §7.2), nothing more.

Accepts:  ForwarderRegistration.RequestForwarderRegistration, .RequestLiveness and
          ForwarderUnRegistration.RequestForwarderUnRegistration on one unix socket
Sends:    liveness `Empty` at once and then every `liveness_interval`; with `watch_forwarders`,
          MonitorMechanisms and MonitorCrossConnects calls to each registered forwarder's socket
Guarantees: a duplicate name is refused with code UNKNOWN and the message
          `forwarder with name <name> already registered`, as nsmd does; unregistration always
          answers un_registered=true, even for an unknown name; a forwarder is dropped (and
          ("forwarder-down", name) recorded) only when its own MonitorMechanisms stream ends or
          fails, never because of stop(), break_liveness() or an unregistration
Threads:  the asyncio loop that called start()
Failure:  a forwarder that cannot be dialled within 15 s or whose MonitorMechanisms stream fails is
          removed from the model, as in nsmd; MonitorCrossConnects errors only end that monitor
Owns:     the socket file (stale file removed before listening, removed again on stop) and the
          model: `registered`, `history`, `mechanisms`, `initial_state`, `peers`
TLS:      with a started `transport` (nsm_forwarder.actors.tls.Transport in a TLS mode), it
          serves mTLS (and refuses peer IDs outside the transport's allow-list) and dials the
          forwarders through it, as nsmd with INSECURE=false
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from nsm_forwarder.actors.local_socket import add_unix_port
from nsm_forwarder.actors.tls import Transport, peer_spiffe_id
from nsm_forwarder.proto import (
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2,
    forwarder_pb2_grpc,
    forwarderregistrar_pb2,
    forwarderregistrar_pb2_grpc,
)

log = logging.getLogger(__name__)

FORWARDER_DIAL_TIMEOUT = 15.0
"""Seconds nsmd waits for a registered forwarder's socket to become ready (spec §7.2)."""


class RegistrarServer:
    """RegistrarServer - nsmd's registrar services on a unix socket, with an inspectable model.

    1. `server = RegistrarServer(path)`, then `await server.start()` inside a running loop.
    2. Read `registered`, `history`, `mechanisms`, `initial_state`; `await wait_for(predicate)`.
    3. `break_liveness()` simulates an nsmd restart without touching the socket.
    4. `await server.stop()`.
    """

    def __init__(
        self,
        socket_path: str,
        *,
        liveness_interval: float = 5.0,
        watch_forwarders: bool = True,
        transport: Transport | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.transport = transport
        self.liveness_interval = liveness_interval
        self.watch_forwarders = watch_forwarders

        self.registered: dict[str, str] = {}
        """Current model: forwarder name -> forwarder socket."""
        self.history: list[tuple[str, str]] = []
        """("register" | "unregister" | "forwarder-down", name), in order."""
        self.mechanisms: dict[str, forwarder_pb2.MechanismUpdate] = {}
        """Last MechanismUpdate received from each forwarder."""
        self.initial_state: dict[str, crossconnect_pb2.CrossConnectEvent] = {}
        """First CrossConnectEvent of the latest MonitorCrossConnects call to each forwarder."""
        self.peers: list[str] = []
        """The peer SPIFFE ID of each registration call ("" over plaintext), in order."""

        self._server: grpc.aio.Server | None = None
        self._liveness_breakers: set[asyncio.Event] = set()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._watch_tasks: set[asyncio.Task[None]] = set()  # includes cancelled, unfinished ones

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Remove a stale socket file, then listen on `socket_path` (mode 0600)."""
        if self._server is not None:
            raise RuntimeError("RegistrarServer already started")
        path = os.path.abspath(self.socket_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _remove_socket_file(path)
        transport = self.transport
        server = grpc.aio.server(interceptors=transport.interceptors() if transport else None)
        forwarderregistrar_pb2_grpc.add_ForwarderRegistrationServicer_to_server(
            _Registration(self), server
        )
        forwarderregistrar_pb2_grpc.add_ForwarderUnRegistrationServicer_to_server(
            _UnRegistration(self), server
        )
        add_unix_port(server, path, transport.server_credentials() if transport else None)
        await server.start()
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        self._server = server
        log.info("registrar stand-in: listening on %s", path)

    async def stop(self) -> None:
        """Stop serving at once (open streams are cancelled), stop the watchers, remove the
        socket file. The model is kept for inspection. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._watchers.clear()
        watchers = list(self._watch_tasks)
        for task in watchers:
            task.cancel()
        self._end_liveness_streams()
        await server.stop(grace=None)
        if watchers:
            await asyncio.gather(*watchers, return_exceptions=True)
        _remove_socket_file(os.path.abspath(self.socket_path))
        log.info("registrar stand-in: stopped (%s)", self.socket_path)

    @property
    def liveness_streams(self) -> int:
        """Number of RequestLiveness streams currently open."""
        return len(self._liveness_breakers)

    def break_liveness(self) -> None:
        """End every open liveness stream with UNAVAILABLE and forget all forwarders, as an nsmd
        restart would (without a "forwarder-down" entry: a restarted nsmd just starts empty)."""
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        self.registered.clear()
        self._end_liveness_streams()

    def drop_forwarder(self, name: str) -> None:
        """Forget forwarder ``name`` as nsmd does when its MonitorMechanisms stream fails (the
        watcher's stream is cancelled, a "forwarder-down" entry is recorded); its liveness
        stream stays open, as in nsmd, whose liveness sender only stops when a send fails."""
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
        if self.registered.pop(name, None) is not None:
            self.history.append(("forwarder-down", name))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll `predicate` every 20 ms until it is true; raise TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"condition not met within {timeout} s; registered={self.registered} "
                    f"history={self.history}"
                )
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ RPC handlers

    def _register(self, name: str, socket: str) -> bool:
        if name in self.registered:
            return False
        self.registered[name] = socket
        self.history.append(("register", name))
        log.info("registrar stand-in: forwarder %r registered with socket %s", name, socket)
        if self.watch_forwarders:
            old = self._watchers.pop(name, None)
            if old is not None:
                old.cancel()
            task = asyncio.get_running_loop().create_task(
                self._watch(name, socket), name=f"registrar-stand-in-watch[{name}]"
            )
            self._watchers[name] = task
            self._watch_tasks.add(task)
            task.add_done_callback(self._watch_tasks.discard)
        return True

    def _unregister(self, name: str) -> None:
        self.registered.pop(name, None)
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
        self.history.append(("unregister", name))
        log.info("registrar stand-in: forwarder %r unregistered", name)

    async def _liveness(self, context: grpc.aio.ServicerContext) -> None:
        breaker = asyncio.Event()
        self._liveness_breakers.add(breaker)
        try:
            while True:
                await context.write(empty_pb2.Empty())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.liveness_interval):
                        await breaker.wait()
                if breaker.is_set():
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, "liveness stream broken (simulated restart)"
                    )
        finally:
            self._liveness_breakers.discard(breaker)

    def _end_liveness_streams(self) -> None:
        for breaker in self._liveness_breakers:
            breaker.set()

    # ------------------------------------------------------------------ forwarder monitors

    async def _watch(self, name: str, socket: str) -> None:
        """nsmd's forwarderMonitor: MonitorMechanisms until it fails, then drop the forwarder."""
        target = "unix://" + os.path.abspath(socket)
        transport = self.transport
        channel = transport.dial(target) if transport else grpc.aio.insecure_channel(target)
        crossconnects: asyncio.Task[None] | None = None
        try:
            try:
                async with asyncio.timeout(FORWARDER_DIAL_TIMEOUT):
                    await channel.channel_ready()
            except TimeoutError:
                reason = f"not ready within {FORWARDER_DIAL_TIMEOUT:.0f} s"
            else:
                crossconnects = asyncio.get_running_loop().create_task(
                    self._watch_crossconnects(name, channel)
                )
                reason = await self._read_mechanisms(name, channel)
        finally:
            if crossconnects is not None:
                crossconnects.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await crossconnects
            await channel.close()
        # Only reached when the stream ended by itself (cancellation skips this).
        if self._watchers.get(name) is asyncio.current_task():
            del self._watchers[name]
            self.registered.pop(name, None)
            self.history.append(("forwarder-down", name))
            log.warning("registrar stand-in: forwarder %r down: %s", name, reason)

    async def _read_mechanisms(self, name: str, channel: grpc.aio.Channel) -> str:
        stub = forwarder_pb2_grpc.MechanismsMonitorStub(channel)
        try:
            async for update in stub.MonitorMechanisms(empty_pb2.Empty()):
                self.mechanisms[name] = update
                log.debug("registrar stand-in: mechanisms of %r: %s", name, update)
        except grpc.aio.AioRpcError as err:
            return f"MonitorMechanisms failed: {err.code().name}: {err.details()}"
        return "MonitorMechanisms ended"

    async def _watch_crossconnects(self, name: str, channel: grpc.aio.Channel) -> None:
        stub = crossconnect_pb2_grpc.MonitorCrossConnectStub(channel)
        first = True
        try:
            async for event in stub.MonitorCrossConnects(empty_pb2.Empty()):
                if first:
                    self.initial_state[name] = event
                    first = False
                log.debug("registrar stand-in: cross-connect event from %r: %s", name, event)
        except grpc.aio.AioRpcError as err:
            log.warning(
                "registrar stand-in: MonitorCrossConnects of %r failed: %s: %s",
                name,
                err.code().name,
                err.details(),
            )


class _Registration(forwarderregistrar_pb2_grpc.ForwarderRegistrationServicer):
    def __init__(self, owner: RegistrarServer) -> None:
        self._owner = owner

    async def RequestForwarderRegistration(
        self,
        request: forwarderregistrar_pb2.ForwarderRegistrationRequest,
        context: grpc.aio.ServicerContext,
    ) -> forwarderregistrar_pb2.ForwarderRegistrationReply:
        name = request.forwarder_name
        self._owner.peers.append(peer_spiffe_id(context) if self._owner.transport else "")
        if not self._owner._register(name, request.forwarder_socket):
            log.info("registrar stand-in: refused duplicate forwarder %r", name)
            await context.abort(
                grpc.StatusCode.UNKNOWN, f"forwarder with name {name} already registered"
            )
        return forwarderregistrar_pb2.ForwarderRegistrationReply(registered=True)

    async def RequestLiveness(
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        # Like nsmd, never read what the forwarder sends.
        await self._owner._liveness(context)


class _UnRegistration(forwarderregistrar_pb2_grpc.ForwarderUnRegistrationServicer):
    def __init__(self, owner: RegistrarServer) -> None:
        self._owner = owner

    async def RequestForwarderUnRegistration(
        self,
        request: forwarderregistrar_pb2.ForwarderUnRegistrationRequest,
        context: grpc.aio.ServicerContext,
    ) -> forwarderregistrar_pb2.ForwarderUnRegistrationReply:
        self._owner._unregister(request.forwarder_name)
        return forwarderregistrar_pb2.ForwarderUnRegistrationReply(un_registered=True)


def _remove_socket_file(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"registrar socket path {path} is a directory")
    os.unlink(path)
