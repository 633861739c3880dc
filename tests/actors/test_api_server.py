"""The forwarder socket's standard services: grpc.health.v1.Health says NOT_SERVING until the
forwarder is ready, and reflection is served only when enabled (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from nsm_forwarder.actors.api_server import SERVICES, ApiServer
from nsm_forwarder.actors.frontend import (
    CrossConnectMonitorService,
    ForwarderService,
    MechanismsService,
    mechanism_update,
)
from nsm_forwarder.actors.metrics import Metrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _started(path: Path, reflection: bool) -> ApiServer:
    stopping = asyncio.Event()
    api = ApiServer("unix", str(path), reflection=reflection)
    api.listen(
        ForwarderService(None, Metrics(False)),  # type: ignore[arg-type]
        MechanismsService(mechanism_update(("KERNEL_INTERFACE",), (), "10.0.0.1"), stopping),
        CrossConnectMonitorService(stopping),
    )
    await api.serve()
    return api


async def _statuses(channel: grpc.aio.Channel) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    replies = [
        await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        for name in ("", *SERVICES)
    ]
    return {r.status for r in replies}


def test_api_server_health_not_serving_until_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        api = await _started(tmp_path / "f.sock", reflection=False)
        try:
            async with grpc.aio.insecure_channel(api.address) as channel:
                assert await _statuses(channel) == {NOT_SERVING}
                await api.set_serving(True)
                assert await _statuses(channel) == {SERVING}
                await api.set_serving(False)
                assert await _statuses(channel) == {NOT_SERVING}
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                call = stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                with pytest.raises(grpc.aio.AioRpcError) as off:
                    await call.read()
                assert off.value.code() is grpc.StatusCode.UNIMPLEMENTED  # off by default
        finally:
            await api.stop()
            api.remove_socket()

    asyncio.run(scenario())


def test_api_server_reflection_when_enabled(tmp_path: Path) -> None:
    async def scenario() -> set[str]:
        api = await _started(tmp_path / "f.sock", reflection=True)
        try:
            async with grpc.aio.insecure_channel(api.address) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                call = stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                reply = await call.read()
                call.cancel()
                return {s.name for s in reply.list_services_response.service}
        finally:
            await api.stop()
            api.remove_socket()

    names = asyncio.run(scenario())
    assert {*SERVICES, "grpc.health.v1.Health"} <= names


def test_registrar_backoff_grows_to_the_retry_interval() -> None:
    """Failed registration tries back off exponentially (tenacity), from FIRST_RETRY up to the
    retry interval, with at most FIRST_RETRY of jitter."""
    import tenacity

    from nsm_forwarder.actors.registrar import FIRST_RETRY, Registrar

    registrar = Registrar(
        name="f", forwarder_socket="/x.sock", registrar_socket="/r.sock", retry_interval=2.0
    )
    wait = registrar._retrying().wait
    assert wait is not None
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    waits = []
    for attempt in range(1, 9):
        state.attempt_number = attempt
        waits.append(wait(state))
    for attempt, got in enumerate(waits, 1):
        base = min(FIRST_RETRY * 2 ** (attempt - 1), 2.0)
        assert base <= got <= base + FIRST_RETRY, (attempt, got)
    assert waits[-1] >= 2.0
