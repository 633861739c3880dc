"""The transport of the operator client commands: what the forwarder's own environment says.

``client_channel(target, environ, timeout)`` opens a sync gRPC channel to ``target``: plaintext
when ``INSECURE`` is true; otherwise mTLS, like the forwarder itself, with the X509-SVID of the
SPIFFE Workload API at ``SPIFFE_ENDPOINT_SOCKET`` or the files of ``NSM_FORWARDER_TLS_CERT_FILE``
/ ``_KEY_FILE`` / ``_CA_FILE``, accepting the peers of ``NSM_FORWARDER_TLS_ALLOWED_IDS`` (any by
default). Run in the forwarder's container (``kubectl exec``), the commands so use the same
transport as the forwarder, with no flag to get wrong.
The TLS side runs the Transport on an asyncio loop in a daemon thread for the channel's life.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import grpc

from nsm_forwarder.actors.tls import DEFAULT_ENDPOINT, TlsSettings, Transport, TransportConfigError
from nsm_forwarder.config.gotypes import parse_go_bool


class NoTransport(Exception):
    """The TLS transport cannot be set up (bad settings, no identity in time)."""


def tls_settings_from_env(environ: Mapping[str, str]) -> TlsSettings:
    """The forwarder's TLS settings as its environment gives them (defaults as the forwarder)."""
    raw = environ.get("INSECURE", "false")
    try:
        insecure = parse_go_bool(raw)
    except ValueError:
        raise NoTransport(f"INSECURE={raw!r} is not a Go bool") from None
    return TlsSettings(
        insecure=insecure,
        endpoint=environ.get("SPIFFE_ENDPOINT_SOCKET") or DEFAULT_ENDPOINT,
        cert_file=environ.get("NSM_FORWARDER_TLS_CERT_FILE", ""),
        key_file=environ.get("NSM_FORWARDER_TLS_KEY_FILE", ""),
        ca_file=environ.get("NSM_FORWARDER_TLS_CA_FILE", ""),
        allowed_ids=environ.get("NSM_FORWARDER_TLS_ALLOWED_IDS", ""),
    )


@contextmanager
def client_channel(
    target: str, environ: Mapping[str, str], timeout: float
) -> Iterator[grpc.Channel]:
    """A channel to ``target`` over the environment's transport; raises NoTransport."""
    settings = tls_settings_from_env(environ)
    if settings.insecure:
        channel = grpc.insecure_channel(target)
        try:
            yield channel
        finally:
            channel.close()
        return
    # the reason comes back in NoTransport; the source's own log lines would repeat it on stderr
    logging.getLogger("nsm_forwarder.actors.svid").addHandler(logging.NullHandler())
    try:
        transport = Transport(settings, what="nsm-forwarder client")
    except TransportConfigError as err:
        raise NoTransport(str(err)) from None
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def open_local() -> str | None:
        if not await transport.start(timeout=timeout):
            return None
        return transport.local_address(target)

    try:
        local = asyncio.run_coroutine_threadsafe(open_local(), loop).result()
        if local is None:
            assert transport.source is not None
            raise NoTransport(f"no TLS identity within {timeout:g}s: {transport.source.last_error}")
        channel = grpc.insecure_channel(local)
        try:
            yield channel
        finally:
            channel.close()
    finally:
        asyncio.run_coroutine_threadsafe(transport.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
