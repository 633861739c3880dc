"""Transport: plaintext or mTLS for every gRPC socket the forwarder serves or dials.

Modes (``Transport.from_settings``):
- ``insecure`` (INSECURE=true): plaintext, as upstream with INSECURE=true.
- ``spiffe`` (the default): mTLS with the X509-SVIDs of the SPIFFE Workload API at
  SPIFFE_ENDPOINT_SOCKET (default ``unix:///run/spire/sockets/agent.sock``), rotated without a
  restart (svid.py).
- ``files``: mTLS with PEM files (NSM_FORWARDER_TLS_CERT_FILE / _KEY_FILE / _CA_FILE), re-read
  when they change.
Peers: upstream accepts any peer whose certificate chains to the trust bundle, whatever its SPIFFE
ID; that is the default here too. NSM_FORWARDER_TLS_ALLOWED_IDS (``spiffe://<trust domain>`` for
a whole trust domain, or full SPIFFE IDs) restricts both sides: the server refuses other clients
with PERMISSION_DENIED (an interceptor reads the peer ID gRPC verified), the dialing side refuses
to talk to other servers (tls_proxy.py).

Accepts:  ``await start(stopping)`` (waits for the first identity), ``server_credentials()``,
          ``interceptors()``, ``dial(target)``, ``await close()``; from the main asyncio loop.
Guarantees: the server requires a client certificate chaining to the bundle (a client without
          one fails the handshake); each new handshake gets the identity current at that moment.
Threads:  the asyncio loop; gRPC calls the certificate fetcher from its own threads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import grpc
import grpc.aio

if TYPE_CHECKING:
    # svid.py and tls_proxy.py load cryptography (~11 MiB): imported only when TLS is on
    from nsm_forwarder.actors.svid import FileSource, Identity, WorkloadApiSource
    from nsm_forwarder.actors.tls_proxy import TlsProxy

log = logging.getLogger(__name__)

#: upstream's SPIRE agent socket, where the Workload API is when SPIFFE_ENDPOINT_SOCKET is unset
DEFAULT_ENDPOINT = "unix:///run/spire/sockets/agent.sock"

Mode = Literal["insecure", "spiffe", "files"]

INSECURE_WARNING = (
    "INSECURE=true: the forwarder API and the registration with nsmd are plaintext gRPC, "
    "without TLS or peer authentication; anyone who can reach the sockets can use them"
)


class TransportConfigError(ValueError):
    """The TLS settings do not fit together; the message says which and why."""


class PeerPolicy:
    """PeerPolicy - which peer SPIFFE IDs are accepted: any (no entries), or those listed
    (``spiffe://td`` admits every ID of trust domain ``td``)."""

    def __init__(self, entries: str | list[str] = "") -> None:
        items = entries.replace(",", " ").split() if isinstance(entries, str) else entries
        for item in items:
            if not item.startswith("spiffe://") or len(item) <= len("spiffe://"):
                raise TransportConfigError(
                    f"NSM_FORWARDER_TLS_ALLOWED_IDS: {item!r} is not a SPIFFE ID or "
                    "spiffe://<trust domain>"
                )
        self.entries = tuple(i.rstrip("/") for i in items)

    @property
    def any(self) -> bool:
        return not self.entries

    def allows(self, spiffe_id: str) -> bool:
        if self.any:
            return True
        for entry in self.entries:
            domain_only = "/" not in entry.removeprefix("spiffe://")
            if spiffe_id == entry or (domain_only and spiffe_id.startswith(entry + "/")):
                return True
        return False

    def __str__(self) -> str:
        return "any SPIFFE ID" if self.any else ", ".join(self.entries)


def peer_spiffe_id(context: grpc.aio.ServicerContext) -> str:
    """The SPIFFE ID gRPC verified for the client of ``context``, or ""."""
    values = context.auth_context().get("peer_spiffe_id") or []
    return values[0].decode(errors="replace") if values else ""


class PeerCheck(grpc.aio.ServerInterceptor):
    """PeerCheck - every RPC of a client whose SPIFFE ID the policy refuses ends with
    PERMISSION_DENIED before its handler runs."""

    def __init__(self, policy: PeerPolicy) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _guarded(handler, self._check)

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        peer = peer_spiffe_id(context)
        if not self.policy.allows(peer):
            log.warning("refused an RPC from peer SPIFFE ID %s: not allowed", peer or "(none)")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"peer SPIFFE ID {peer or '(none)'} is not allowed",
            )


def _guarded(
    handler: grpc.RpcMethodHandler,
    check: Callable[[grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """The same handler, with ``check(context)`` awaited before its behaviour."""
    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attr, make = kinds[(handler.request_streaming, handler.response_streaming)]
    behaviour = getattr(handler, attr)
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await check(context)
            async for item in behaviour(request, context):
                yield item

        wrapped = stream
    else:

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

        wrapped = call
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@dataclass(frozen=True)
class TlsSettings:
    """TlsSettings - what Transport needs, from Settings or from a client's environment."""

    insecure: bool
    endpoint: str = DEFAULT_ENDPOINT
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    allowed_ids: str = ""

    @property
    def mode(self) -> Mode:
        if self.insecure:
            return "insecure"
        files = (self.cert_file, self.key_file, self.ca_file)
        if any(files) and not all(files):
            raise TransportConfigError(
                "file-based TLS needs all of NSM_FORWARDER_TLS_CERT_FILE, "
                "NSM_FORWARDER_TLS_KEY_FILE and NSM_FORWARDER_TLS_CA_FILE"
            )
        return "files" if all(files) else "spiffe"


def tls_settings_from(values: Mapping[str, Any]) -> TlsSettings:
    """A TlsSettings from a mapping with the Settings field names (a Settings' dict)."""
    return TlsSettings(
        insecure=bool(values["insecure"]),
        endpoint=str(values["spiffe_endpoint_socket"]),
        cert_file=str(values["tls_cert_file"] or ""),
        key_file=str(values["tls_key_file"] or ""),
        ca_file=str(values["tls_ca_file"] or ""),
        allowed_ids=str(values["tls_allowed_ids"]),
    )


class Transport:
    """Transport - build with ``from_settings``; ``await start()`` before serving or dialing."""

    WAIT_LOG_INTERVAL = 60.0

    def __init__(self, settings: TlsSettings, what: str = "forwarder") -> None:
        self.mode: Mode = settings.mode
        self.policy = PeerPolicy(settings.allowed_ids)
        self.what = what
        self.source: WorkloadApiSource | FileSource | None = None
        if self.mode == "spiffe":
            from nsm_forwarder.actors.svid import WorkloadApiSource

            try:
                self.source = WorkloadApiSource(settings.endpoint)
            except ValueError as err:
                raise TransportConfigError(f"SPIFFE_ENDPOINT_SOCKET: {err}") from None
        elif self.mode == "files":
            from nsm_forwarder.actors.svid import FileSource

            self.source = FileSource(settings.cert_file, settings.key_file, settings.ca_file)
        self._proxy: TlsProxy | None = None
        self._served = 0

    @property
    def secure(self) -> bool:
        return self.source is not None

    def describe(self) -> str:
        if self.source is None:
            return "plaintext (INSECURE=true)"
        from nsm_forwarder.actors.svid import WorkloadApiSource

        where = (
            f"the SPIFFE Workload API at {self.source.endpoint}"
            if isinstance(self.source, WorkloadApiSource)
            else f"files {', '.join(self.source.paths)}"
        )
        return f"mTLS with identities from {where}; peers accepted: {self.policy}"

    def identity(self) -> Identity:
        assert self.source is not None
        return self.source.current()

    async def start(
        self, stopping: asyncio.Event | None = None, timeout: float | None = None
    ) -> bool:
        """Wait for the first identity; False if ``stopping`` was set or ``timeout`` passed."""
        if self.source is None:
            return True
        self.source.start()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        said = -self.WAIT_LOG_INTERVAL
        from nsm_forwarder.actors.svid import FileSource
        from nsm_forwarder.actors.tls_proxy import TlsProxy

        while not self.source.wait(0):
            if isinstance(self.source, FileSource) and loop.time() - said >= self.WAIT_LOG_INTERVAL:
                log.error("TLS files: %s; waiting for them", self.source.last_error)
                said = loop.time()
            if (stopping is not None and stopping.is_set()) or (
                deadline is not None and loop.time() >= deadline
            ):
                return False
            await asyncio.sleep(0.1)
        self._proxy = TlsProxy(self.identity, self.policy.allows, self.what)
        log.info("transport: %s", self.describe())
        return True

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """None in insecure mode; else credentials requiring a client certificate, whose
        server certificate follows the identity (rotation)."""
        if self.source is None:
            return None
        from nsm_forwarder.actors.svid import NotReady

        first = self.identity()
        self._served = first.version

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                now = self.identity()
            except NotReady:
                return None
            if now.version == self._served:
                return None
            self._served = now.version
            log.info("TLS: new connections get the rotated identity %s", now.spiffe_id or "")
            return _certificate_configuration(now)

        return grpc.dynamic_ssl_server_credentials(
            _certificate_configuration(first), fetch, require_client_authentication=True
        )

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The SPIFFE ID check, when an allow-list is set in a TLS mode."""
        return [] if self.source is None or self.policy.any else [PeerCheck(self.policy)]

    def dial(self, target: str) -> grpc.aio.Channel:
        """A grpc.aio channel to ``target`` (``unix://<path>`` or HOST:PORT): plaintext in
        insecure mode, else through the TLS proxy."""
        if self._proxy is None:
            if self.source is not None:
                raise RuntimeError("Transport.dial before start()")
            return grpc.aio.insecure_channel(target)
        return grpc.aio.insecure_channel(self._proxy.address(target))

    def local_address(self, target: str) -> str:
        """What a plaintext channel must dial to reach ``target`` with this transport."""
        return target if self._proxy is None else self._proxy.address(target)

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.close()
            self._proxy = None
        if self.source is not None:
            self.source.close()


def _certificate_configuration(identity: Identity) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(identity.key, identity.chain)], root_certificates=identity.bundle
    )
