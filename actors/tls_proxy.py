"""TlsProxy: the dialing side of mTLS, done by Python's ``ssl`` beside a plaintext gRPC channel.

Why: grpc's Python TLS channel credentials always check the server's certificate against a host
name (DNS SAN or CN), and an X509-SVID names its workload only by a URI SAN (SPIRE's SVIDs have
neither a DNS SAN nor a CN unless the registration entry asks for one). go-spiffe and nsmd verify
the chain against the trust bundle and then the SPIFFE ID; grpc Python offers no hook to do that.
So a channel that must dial over mTLS dials a private local socket of this proxy instead, and
the proxy opens the real connection with ``ssl``: chain checked against the trust bundle, no host
name, the peer's SPIFFE ID checked by the PeerPolicy, this process's current SVID presented.

Accepts:  ``address(target)`` (the local plaintext address to dial instead of ``target``, a
          ``unix://`` path or HOST:PORT); connections on those local sockets.
Sends:    one TLS connection to the real target per local connection; bytes both ways.
Guarantees: the local sockets live in a directory of mode 0700 made for this proxy (only this
          user reaches them); every new connection uses the identity current at that moment
          (rotation); a refused handshake or peer closes the local connection, so gRPC sees
          UNAVAILABLE and retries like any dial failure; one WARNING line per distinct reason.
Threads:  the asyncio loop that created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable

from cryptography import x509

from nsm_forwarder.actors.svid import Identity, NotReady, spiffe_id_of

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TLS connection to the real target may take (connect and handshake)."""


class TlsProxy:
    """TlsProxy - local plaintext sockets that forward over mTLS; ``close()`` at the end."""

    def __init__(
        self, identity: Callable[[], Identity], allows: Callable[[str], bool], what: str
    ) -> None:
        self._identity = identity
        self._allows = allows
        self._what = what
        self._dir = tempfile.mkdtemp(prefix="nsm-forwarder-tls-")  # mode 0700
        self._numbers = itertools.count(1)
        self._locals: dict[str, str] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._links: set[asyncio.Task[None]] = set()
        self._context: tuple[int, ssl.SSLContext] | None = None
        self._said: set[str] = set()

    def address(self, target: str) -> str:
        """The ``unix://`` address to dial plaintext instead of ``target`` (created once)."""
        if target not in self._locals:
            path = os.path.join(self._dir, f"{next(self._numbers)}.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(64)
            listener.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._serve(listener, target))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
            self._locals[target] = "unix://" + path
        return self._locals[target]

    async def close(self) -> None:
        for task in list(self._starting) + list(self._links):
            task.cancel()
        for server in self._servers:
            server.close()
        pending = {*self._starting, *self._links}
        if pending:
            await asyncio.wait(pending, timeout=5)
        self._servers.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- internals ---------------------------------------------------------------------------

    async def _serve(self, listener: socket.socket, target: str) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._links.add(task)
            try:
                await self._link(reader, writer, target)
            finally:
                self._links.discard(task)

        self._servers.append(await asyncio.start_unix_server(accepted, sock=listener))

    def _client_context(self) -> ssl.SSLContext:
        identity = self._identity()
        if self._context is not None and self._context[0] == identity.version:
            return self._context[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False  # SVIDs name a workload by URI SAN; checked below
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=identity.bundle.decode())
        context.set_alpn_protocols(["h2"])
        fd, path = tempfile.mkstemp(dir=self._dir, suffix=".pem")  # 0600, in a 0700 directory
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(identity.chain + b"\n" + identity.key)
            context.load_cert_chain(path)
        finally:
            os.unlink(path)
        self._context = (identity.version, context)
        return context

    async def _open(self, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = self._client_context()
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            if target.startswith("unix:"):
                path = "/" + target.removeprefix("unix:").lstrip("/")
                return await asyncio.open_unix_connection(path, ssl=context, server_hostname="")
            host, _, port = target.rpartition(":")
            return await asyncio.open_connection(
                host.strip("[]") or "localhost", int(port), ssl=context, server_hostname=""
            )

    def _peer_refusal(self, writer: asyncio.StreamWriter) -> str | None:
        """Why the peer of ``writer`` is not acceptable, or None."""
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return "the peer sent no certificate"
        peer = spiffe_id_of(x509.load_der_x509_certificate(der))
        if not self._allows(peer):
            return f"peer SPIFFE ID {peer or '(none)'} is not allowed"
        return None

    def _say(self, target: str, why: str) -> None:
        key = f"{target} {why}"
        if key not in self._said:
            self._said.add(key)
            log.warning("%s: TLS connection to %s refused: %s", self._what, target, why)

    async def _link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
    ) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await self._open(target)
            except FileNotFoundError:
                return  # the socket is not there (yet): gRPC retries, the caller waits for it
            except (OSError, ssl.SSLError, TimeoutError, NotReady) as err:
                self._say(target, str(err) or type(err).__name__)
                return
            refusal = self._peer_refusal(upstream)
            if refusal is not None:
                self._say(target, refusal)
                return
            await asyncio.gather(_pump(reader, upstream), _pump(up_reader, writer))
        finally:
            # no wait for the TLS close_notify exchange: the peer may never answer it
            writer.close()
            if upstream is not None:
                upstream.transport.abort()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until end of file or an error, then end the sink's side."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()
            else:
                sink.close()
