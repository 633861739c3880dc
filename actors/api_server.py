"""ApiServer: the grpc.aio server that carries the Frontend on FORWARDER_SOCKET.

Accepts:  listen(services) / serve() (start-up phase "grpc"), stop() and remove_socket()
          (shutdown), from the Supervisor.
Sends:    nothing itself: it serves the Frontend's forwarder.Forwarder,
          forwarder.MechanismsMonitor and crossconnect.MonitorCrossConnect services, the
          standard grpc.health.v1.Health (grpcio-health-checking), which says NOT_SERVING for
          each of them (and for "") until set_serving(True) (the Supervisor calls it when the
          forwarder is ready, as /readiness), and NOT_SERVING again from stop(); with
          ``reflection``, gRPC server reflection (grpcio-reflection) of all of them.
Guarantees: a stale unix socket file is removed before listening, but anything else at that path
          is refused and left alone; remove_socket() removes only a socket this server cleaned
          and listened on; the unix socket is mode 0660 (group ``group``) from the moment it can
          be reached (local_socket.py); TCP is only used when asked for, with a warning; with a
          Transport in a TLS mode, every connection is mTLS and, with an allow-list, every RPC of
          a refused peer ID fails with PERMISSION_DENIED (tls.py); a received message larger than
          ``max_message_size`` bytes is refused by gRPC with RESOURCE_EXHAUSTED.
Threads:  the asyncio loop of the main process.
"""

from __future__ import annotations

import logging
import os
import stat

import grpc
import grpc.aio
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nsm_forwarder.actors.frontend import (
    CrossConnectMonitorService,
    ForwarderService,
    MechanismsService,
    StreamLimit,
    add_forwarder_service,
)
from nsm_forwarder.actors.grpc_io import grpc_address
from nsm_forwarder.actors.local_socket import SocketError, add_unix_port
from nsm_forwarder.actors.tls import Transport
from nsm_forwarder.proto import crossconnect_pb2_grpc, forwarder_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = (
    "forwarder.Forwarder",
    "forwarder.MechanismsMonitor",
    "crossconnect.MonitorCrossConnect",
)


class ListenError(Exception):
    """The forwarder socket cannot be listened on; the message says why."""


def clean_socket(path: str) -> None:
    """Remove a stale unix socket at ``path``; refuse to remove anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"FORWARDER_SOCKET {path} exists and is not a socket; not removing it")
    os.unlink(path)


class BoundedHealth(grpc_health.aio.HealthServicer):
    """grpc.health.v1.Health with at most ``max_watchers`` Watch streams open at once (each
    holds a task and, for a new service name, an entry of the servicer's own): one more is
    refused with RESOURCE_EXHAUSTED, like the monitor streams (max_monitor_subscribers)."""

    def __init__(self, max_watchers: int) -> None:
        super().__init__()
        self.streams = StreamLimit("Health.Watch", max_watchers)

    async def Watch(  # noqa: N802 (the gRPC method's name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        async with self.streams.hold(context):
            await super().Watch(request, context)


class ApiServer:
    """ApiServer - ``listen(...)``, ``await serve()``; at the end ``await stop()``, then
    ``remove_socket()``."""

    def __init__(
        self,
        socket_type: str,
        socket: str,
        group: str = "",
        reflection: bool = False,
        max_message_size: int = 4 * 1024 * 1024,
        max_watchers: int = 64,
    ) -> None:
        self.address = grpc_address(socket_type, socket)
        self.max_message_size = max_message_size
        self.group = group
        self.reflection = reflection
        #: the unix socket file (absolute), None for tcp
        self.socket_path = os.path.abspath(socket) if socket_type == "unix" else None
        self._claimed = False
        self._server: grpc.aio.Server | None = None
        self._health = BoundedHealth(max_watchers)

    def listen(
        self,
        forwarder: ForwarderService,
        mechanisms: MechanismsService,
        monitor: CrossConnectMonitorService,
        transport: Transport | None = None,
    ) -> None:
        """Add the services, clean a stale socket and bind the address (not serving yet);
        ``transport`` (started) gives the credentials and the peer check (None: plaintext)."""
        server = grpc.aio.server(
            interceptors=transport.interceptors() if transport else None,
            options=[("grpc.max_receive_message_length", self.max_message_size)],
        )
        credentials = transport.server_credentials() if transport else None
        add_forwarder_service(forwarder, server)
        forwarder_pb2_grpc.add_MechanismsMonitorServicer_to_server(mechanisms, server)
        crossconnect_pb2_grpc.add_MonitorCrossConnectServicer_to_server(monitor, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.reflection:
            from grpc_reflection.v1alpha import reflection

            names = (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
            reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
        if self.socket_path is not None:
            clean_socket(self.socket_path)
            self._claimed = True
            try:
                add_unix_port(server, self.socket_path, credentials, self.group)
            except SocketError as exc:
                raise ListenError(str(exc)) from None
        else:
            log.warning(
                "FORWARDER_SOCKET_TYPE=tcp: the forwarder API listens on TCP %s%s",
                self.address,
                "" if credentials else ", in plaintext: anyone who can reach it can use it",
            )
            try:
                if credentials is None:
                    server.add_insecure_port(self.address)
                else:
                    server.add_secure_port(self.address, credentials)
            except RuntimeError as exc:
                raise ListenError(f"cannot listen on {self.address}: {exc}") from None
        self._server = server

    async def serve(self) -> None:
        """Start serving; the health service says NOT_SERVING until :meth:`set_serving`."""
        assert self._server is not None, "listen() first"
        await self.set_serving(False)
        await self._server.start()

    async def set_serving(self, serving: bool) -> None:
        """What the health service says for every service (and for "")."""
        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICES):
            await self._health.set(name, status)

    async def stop(self) -> bool:
        """Health says NOT_SERVING, then stop with 1 s of grace; False if it never listened."""
        server, self._server = self._server, None
        if server is None:
            return False
        await self._health.enter_graceful_shutdown()
        await server.stop(grace=1.0)
        return True

    def remove_socket(self) -> None:
        """Remove the unix socket file, if this server cleaned it for listening."""
        if self._claimed and self.socket_path is not None and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
