"""The Transport in one process (no root): real gRPC over unix sockets with minted certificates,
the socket's mode and group, and the allow-list."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nsm_forwarder.actors.local_socket import SocketError, add_unix_port, resolve_group
from nsm_forwarder.actors.tls import PeerPolicy, TlsSettings, Transport, TransportConfigError
from tests.tls.workload_api import Authority, Svid, WorkloadApi


@pytest.fixture
def workdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="nft-tls-", dir="/tmp") as tmp:
        yield tmp


def file_settings(svid: Svid, directory: str, name: str, allowed: str = "") -> TlsSettings:
    cert, key, ca = svid.write(directory, name)
    return TlsSettings(
        insecure=False, cert_file=cert, key_file=key, ca_file=ca, allowed_ids=allowed
    )


async def check(server_side: Transport, client_side: Transport, path: str) -> grpc.StatusCode:
    """Serve Health with ``server_side`` on ``path``; one Check through ``client_side``."""
    assert await server_side.start(timeout=5) and await client_side.start(timeout=5)
    server = grpc.aio.server(interceptors=server_side.interceptors())
    health_pb2_grpc.add_HealthServicer_to_server(grpc_health.aio.HealthServicer(), server)
    add_unix_port(server, path, server_side.server_credentials())
    await server.start()
    try:
        async with client_side.dial("unix://" + path) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK
    finally:
        await server.stop(None)
        await server_side.close()
        await client_side.close()


def test_PeerPolicy() -> None:
    assert PeerPolicy("").allows("spiffe://a/x") and PeerPolicy("").any
    policy = PeerPolicy("spiffe://a.org, spiffe://b.org/ns/nsm/sa/nsmd")
    assert policy.allows("spiffe://a.org/anything/at/all")
    assert policy.allows("spiffe://b.org/ns/nsm/sa/nsmd")
    assert not policy.allows("spiffe://b.org/ns/nsm/sa/other")
    assert not policy.allows("spiffe://a.organisation/x")
    assert not policy.allows("")
    with pytest.raises(TransportConfigError, match="not a SPIFFE ID"):
        PeerPolicy("example.org")


def test_TlsSettings_mode() -> None:
    assert TlsSettings(insecure=True, cert_file="x").mode == "insecure"
    assert TlsSettings(insecure=False).mode == "spiffe"
    assert TlsSettings(insecure=False, cert_file="a", key_file="b", ca_file="c").mode == "files"
    with pytest.raises(TransportConfigError, match="needs all of"):
        _ = TlsSettings(insecure=False, cert_file="a").mode


def test_unix_socket_is_0660_with_its_group(workdir: str) -> None:
    async def run() -> os.stat_result:
        server = grpc.aio.server()
        path = os.path.join(workdir, "api.sock")
        add_unix_port(server, path, None, str(os.getgid()))
        await server.start()
        try:
            return os.stat(path)
        finally:
            await server.stop(None)

    st = asyncio.run(run())
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == os.getgid()
    assert os.listdir(workdir) == ["api.sock"]  # the private staging directory is gone
    assert resolve_group("") == -1
    with pytest.raises(SocketError, match="no group named"):
        resolve_group("no-such-group-here")


def test_mTLS_with_files_and_the_allow_list_on_both_sides(workdir: str) -> None:
    ca = Authority()
    server, client = ca.svid("/forwarder"), ca.svid("/nsmd")
    path = os.path.join(workdir, "s.sock")

    def run(server_allowed: str, client_allowed: str) -> grpc.StatusCode:
        return asyncio.run(
            check(
                Transport(file_settings(server, workdir, "server", server_allowed)),
                Transport(file_settings(client, workdir, "client", client_allowed)),
                path,
            )
        )

    assert run("", "") == grpc.StatusCode.OK
    assert run("spiffe://example.org/nsmd", "spiffe://example.org") == grpc.StatusCode.OK
    assert run("spiffe://example.org/other", "") == grpc.StatusCode.PERMISSION_DENIED
    assert run("", "spiffe://example.org/other") == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_of_another_CA_is_refused(workdir: str) -> None:
    ours, theirs = Authority(), Authority()  # same trust domain name, another key
    path = os.path.join(workdir, "s.sock")
    code = asyncio.run(
        check(
            Transport(file_settings(ours.svid("/forwarder"), workdir, "server")),
            Transport(file_settings(theirs.svid("/nsmd"), workdir, "client")),
            path,
        )
    )
    assert code == grpc.StatusCode.UNAVAILABLE


def test_mTLS_with_svids_from_the_workload_api(workdir: str) -> None:
    ca = Authority()
    apis = [WorkloadApi(os.path.join(workdir, f"{n}.agent"), ca.svid(f"/{n}")) for n in ("a", "b")]
    try:
        code = asyncio.run(
            check(
                Transport(TlsSettings(insecure=False, endpoint=apis[0].endpoint)),
                Transport(
                    TlsSettings(
                        insecure=False,
                        endpoint=apis[1].endpoint,
                        allowed_ids="spiffe://example.org/a",
                    )
                ),
                os.path.join(workdir, "s.sock"),
            )
        )
        assert code == grpc.StatusCode.OK
    finally:
        for api in apis:
            api.stop()


def test_start_gives_up_after_its_timeout_without_an_agent(workdir: str) -> None:
    transport = Transport(
        TlsSettings(insecure=False, endpoint="unix://" + os.path.join(workdir, "none.sock"))
    )

    async def run() -> bool:
        try:
            return await transport.start(timeout=0.5)
        finally:
            await transport.close()

    assert asyncio.run(run()) is False
    assert transport.source is not None and "does not exist" in transport.source.last_error


def test_tcp_listens_only_when_asked_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    from typing import Any, cast

    from nsm_forwarder.actors.api_server import ApiServer
    from nsm_forwarder.proto import crossconnect_pb2_grpc, forwarder_pb2_grpc

    async def run() -> None:
        api = ApiServer("tcp", "127.0.0.1:0")
        api.listen(
            cast(Any, forwarder_pb2_grpc.ForwarderServicer()),
            cast(Any, forwarder_pb2_grpc.MechanismsMonitorServicer()),
            cast(Any, crossconnect_pb2_grpc.MonitorCrossConnectServicer()),
        )
        await api.stop()

    with caplog.at_level("WARNING"):
        asyncio.run(run())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "FORWARDER_SOCKET_TYPE=tcp: the forwarder API listens on TCP 127.0.0.1:0, in plaintext: "
        "anyone who can reach it can use it"
    ]
