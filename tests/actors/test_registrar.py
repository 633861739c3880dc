"""Tests for the Registrar actor and the RegistrarServer stand-in (real gRPC over unix sockets)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import empty_pb2

from nsm_forwarder.actors.registrar import Registrar, RegistrationState
from nsm_forwarder.proto import (
    connection_pb2,
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2,
    forwarder_pb2_grpc,
)
from nsm_forwarder.tools.registrar_server import RegistrarServer

NAME = "kernel-forwarder"
FAST: dict[str, Any] = {"retry_interval": 0.2, "rpc_timeout": 2.0}


def run(coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
    """Run one test body in a fresh loop, never longer than `timeout`."""
    asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def sockdir() -> Iterator[str]:
    # tmp_path can exceed the 108-byte limit of unix socket paths.
    path = tempfile.mkdtemp(prefix="reg-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class FakeForwarder:
    """The forwarder's monitor side: one MechanismUpdate and one initial transfer, then idle."""

    def __init__(self, socket_path: str, *, mechanism_type: str = "KERNEL_INTERFACE") -> None:
        self.socket_path = socket_path
        self.update = forwarder_pb2.MechanismUpdate(
            local_mechanisms=[connection_pb2.Mechanism(cls="LOCAL", type=mechanism_type)]
        )
        self.initial = crossconnect_pb2.CrossConnectEvent(
            type=crossconnect_pb2.INITIAL_STATE_TRANSFER,
            cross_connects={"1": crossconnect_pb2.CrossConnect(id="1", payload="IP")},
        )
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        outer = self

        class Mechanisms(forwarder_pb2_grpc.MechanismsMonitorServicer):
            async def MonitorMechanisms(self, request: Any, context: Any) -> None:
                await context.write(outer.update)
                await asyncio.Event().wait()

        class CrossConnects(crossconnect_pb2_grpc.MonitorCrossConnectServicer):
            async def MonitorCrossConnects(self, request: Any, context: Any) -> None:
                await context.write(outer.initial)
                await asyncio.Event().wait()

        server = grpc.aio.server()
        forwarder_pb2_grpc.add_MechanismsMonitorServicer_to_server(Mechanisms(), server)
        crossconnect_pb2_grpc.add_MonitorCrossConnectServicer_to_server(CrossConnects(), server)
        server.add_insecure_port("unix://" + self.socket_path)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


def registrar(
    sockdir: str,
    *,
    name: str = NAME,
    forwarder: str = "fwd.sock",
    states: list[RegistrationState] | None = None,
) -> Registrar:
    return Registrar(
        name=name,
        forwarder_socket=os.path.join(sockdir, forwarder),
        registrar_socket=os.path.join(sockdir, "registrar.sock"),
        on_state=None if states is None else states.append,
        **FAST,
    )


def registrations(server: RegistrarServer) -> int:
    return server.history.count(("register", NAME))


def test_Registrar_registers_when_socket_appears_late(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nsm_forwarder.actors.registrar")
    registrar_socket = os.path.join(sockdir, "registrar.sock")

    async def body() -> None:
        forwarder = FakeForwarder(os.path.join(sockdir, "fwd.sock"))
        await forwarder.start()
        states: list[RegistrationState] = []
        reg = registrar(sockdir, states=states)
        await reg.start()
        await asyncio.sleep(0.4)
        assert reg.state is RegistrationState.WAITING_FOR_SOCKET
        with pytest.raises(TimeoutError):
            await reg.wait_registered(timeout=0.05)

        server = RegistrarServer(registrar_socket, liveness_interval=0.2)
        await server.start()
        try:
            await reg.wait_registered(timeout=5)
            assert server.registered == {NAME: os.path.join(sockdir, "fwd.sock")}
            assert server.history == [("register", NAME)]
            stats = reg.statistics()
            assert (stats.state, stats.registrations, stats.failures) == (
                RegistrationState.REGISTERED,
                1,
                0,
            )
            assert states[:3] == [
                RegistrationState.WAITING_FOR_SOCKET,
                RegistrationState.REGISTERING,
                RegistrationState.REGISTERED,
            ]
            # Liveness messages keep coming (interval 0.2 s) without disturbing the registration.
            await asyncio.sleep(0.5)
            assert reg.state is RegistrationState.REGISTERED
            assert server.history == [("register", NAME)]
        finally:
            await reg.stop()
            await server.stop()
            await forwarder.stop()

    run(body())
    waiting = [r for r in caplog.records if "waiting for the forwarder registrar" in r.message]
    assert len(waiting) == 1  # once at the start, then at most once a minute
    assert registrar_socket in waiting[0].message


def test_Registrar_duplicate_name_retries_until_old_one_unregisters(sockdir: str) -> None:
    async def body() -> None:
        fwd_a = FakeForwarder(os.path.join(sockdir, "a.sock"))
        fwd_b = FakeForwarder(os.path.join(sockdir, "b.sock"))
        await fwd_a.start()
        await fwd_b.start()
        server = RegistrarServer(os.path.join(sockdir, "registrar.sock"), liveness_interval=0.2)
        await server.start()
        first = registrar(sockdir, forwarder="a.sock")
        states: list[RegistrationState] = []
        second = registrar(sockdir, forwarder="b.sock", states=states)
        try:
            await first.start()
            await first.wait_registered(timeout=5)
            await second.start()
            await server.wait_for(lambda: second.statistics().failures >= 2, timeout=5)
            stats = second.statistics()
            assert stats.registrations == 0
            assert stats.last_error == f"UNKNOWN: forwarder with name {NAME} already registered"
            assert server.registered == {NAME: os.path.join(sockdir, "a.sock")}
            # The socket is there, so retries go straight from RETRYING to REGISTERING.
            assert states.count(RegistrationState.WAITING_FOR_SOCKET) == 1
            assert states[-1] in (RegistrationState.RETRYING, RegistrationState.REGISTERING)

            await first.stop()
            await second.wait_registered(timeout=5)
            assert server.registered == {NAME: os.path.join(sockdir, "b.sock")}
            assert server.history == [("register", NAME), ("unregister", NAME), ("register", NAME)]
            await server.wait_for(lambda: NAME in server.mechanisms, timeout=5)
        finally:
            await second.stop()
            await first.stop()
            await server.stop()
            await fwd_a.stop()
            await fwd_b.stop()

    run(body())


def test_Registrar_stop_while_refused_sends_no_unregistration(sockdir: str) -> None:
    async def body() -> None:
        server = RegistrarServer(
            os.path.join(sockdir, "registrar.sock"), liveness_interval=0.2, watch_forwarders=False
        )
        await server.start()
        owner = registrar(sockdir, forwarder="a.sock")
        intruder = registrar(sockdir, forwarder="b.sock")
        try:
            await owner.start()
            await owner.wait_registered(timeout=5)
            await intruder.start()
            await server.wait_for(lambda: intruder.statistics().failures >= 1, timeout=5)
            await intruder.stop()
            assert intruder.state is RegistrationState.STOPPED
            # The intruder never registered, so it must not remove the owner's entry.
            assert ("unregister", NAME) not in server.history
            assert server.registered == {NAME: os.path.join(sockdir, "a.sock")}
        finally:
            await owner.stop()
            await server.stop()

    run(body())


def test_Registrar_reregisters_after_liveness_break(sockdir: str) -> None:
    async def body() -> None:
        forwarder = FakeForwarder(os.path.join(sockdir, "fwd.sock"))
        await forwarder.start()
        server = RegistrarServer(os.path.join(sockdir, "registrar.sock"), liveness_interval=0.2)
        await server.start()
        states: list[RegistrationState] = []
        reg = registrar(sockdir, states=states)
        try:
            await reg.start()
            await reg.wait_registered(timeout=5)
            await server.wait_for(lambda: server.liveness_streams == 1, timeout=5)
            server.break_liveness()
            assert server.registered == {}  # a restarted nsmd starts with an empty model
            await server.wait_for(lambda: registrations(server) == 2, timeout=5)
            await reg.wait_registered(timeout=5)
            assert server.history == [("register", NAME), ("register", NAME)]
            assert reg.statistics().registrations == 2
            assert "UNAVAILABLE" in reg.statistics().last_error
            assert states.count(RegistrationState.REGISTERED) == 2
            await server.wait_for(lambda: NAME in server.mechanisms, timeout=5)
        finally:
            await reg.stop()
            await server.stop()
            await forwarder.stop()

    run(body())


def test_Registrar_reregisters_after_registrar_restart(sockdir: str) -> None:
    path = os.path.join(sockdir, "registrar.sock")

    async def body() -> None:
        forwarder = FakeForwarder(os.path.join(sockdir, "fwd.sock"))
        await forwarder.start()
        server = RegistrarServer(path, liveness_interval=0.2)
        await server.start()
        reg = registrar(sockdir)
        restarted: RegistrarServer | None = None
        try:
            await reg.start()
            await reg.wait_registered(timeout=5)
            await server.stop()
            assert not os.path.exists(path)
            await server.wait_for(
                lambda: reg.state is RegistrationState.WAITING_FOR_SOCKET, timeout=5
            )

            restarted = RegistrarServer(path, liveness_interval=0.2)
            await restarted.start()
            await restarted.wait_for(lambda: NAME in restarted.registered, timeout=5)
            await reg.wait_registered(timeout=5)
            assert restarted.history == [("register", NAME)]
            assert reg.statistics().registrations == 2
            # nsmd's restore path (spec §7.5): the new registrar gets a fresh initial transfer.
            await restarted.wait_for(lambda: NAME in restarted.initial_state, timeout=5)
        finally:
            await reg.stop()
            if restarted is not None:
                await restarted.stop()
            await server.stop()
            await forwarder.stop()

    run(body())


def test_Registrar_stop_unregisters_promptly(sockdir: str) -> None:
    async def body() -> None:
        server = RegistrarServer(
            os.path.join(sockdir, "registrar.sock"), liveness_interval=5.0, watch_forwarders=False
        )
        await server.start()
        states: list[RegistrationState] = []
        reg = registrar(sockdir, states=states)
        try:
            await reg.start()
            await reg.wait_registered(timeout=5)
            await asyncio.sleep(0.2)  # now between two liveness messages (5 s apart)
            started = time.monotonic()
            await reg.stop()
            assert time.monotonic() - started < 1.0
            assert server.history == [("register", NAME), ("unregister", NAME)]
            assert server.registered == {}
            assert states[-2:] == [RegistrationState.UNREGISTERED, RegistrationState.STOPPED]

            await reg.stop()  # idempotent: nothing sent twice
            assert server.history.count(("unregister", NAME)) == 1
            with pytest.raises(RuntimeError):
                await reg.wait_registered(timeout=1)
            with pytest.raises(RuntimeError):
                await reg.start()
        finally:
            await server.stop()

    run(body())


def test_Registrar_stop_before_registering_is_prompt_and_silent(sockdir: str) -> None:
    async def body() -> None:
        states: list[RegistrationState] = []
        reg = registrar(sockdir, states=states)  # no registrar socket ever appears
        await reg.start()
        await asyncio.sleep(0.3)
        waiter = asyncio.ensure_future(reg.wait_registered())
        started = time.monotonic()
        await reg.stop()
        assert time.monotonic() - started < 1.0
        assert reg.state is RegistrationState.STOPPED
        assert RegistrationState.UNREGISTERED not in states
        with pytest.raises(RuntimeError):
            await waiter  # a pending wait_registered() learns about the stop

    run(body())


def test_Registrar_survives_failing_on_state_callback(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    def on_state(state: RegistrationState) -> None:
        raise ValueError(f"callback broken in {state.value}")

    async def body() -> None:
        server = RegistrarServer(
            os.path.join(sockdir, "registrar.sock"), liveness_interval=0.2, watch_forwarders=False
        )
        await server.start()
        reg = Registrar(
            name=NAME,
            forwarder_socket="fwd.sock",
            registrar_socket=server.socket_path,
            on_state=on_state,
            **FAST,
        )
        try:
            await reg.start()
            await reg.wait_registered(timeout=5)
        finally:
            await reg.stop()
            await server.stop()
        assert server.history == [("register", NAME), ("unregister", NAME)]

    run(body())
    errors = [r for r in caplog.records if "on_state callback failed" in r.message]
    assert errors and errors[0].exc_info is not None


def test_Registrar_stop_without_start(sockdir: str) -> None:
    async def body() -> None:
        reg = registrar(sockdir)
        await reg.stop()
        assert reg.state is RegistrationState.STOPPED

    run(body())


def test_RegistrarServer_records_monitors_and_forwarder_down(sockdir: str) -> None:
    async def body() -> None:
        forwarder = FakeForwarder(os.path.join(sockdir, "fwd.sock"), mechanism_type="VXLAN")
        server = RegistrarServer(os.path.join(sockdir, "registrar.sock"), liveness_interval=0.2)
        await server.start()
        reg = registrar(sockdir)
        try:
            await reg.start()
            await reg.wait_registered(timeout=5)
            # The forwarder's server may come up after registration: nsmd waits up to 15 s.
            await asyncio.sleep(0.2)
            await forwarder.start()
            await server.wait_for(
                lambda: NAME in server.mechanisms and NAME in server.initial_state, timeout=5
            )
            assert server.mechanisms[NAME] == forwarder.update
            assert server.initial_state[NAME] == forwarder.initial

            await forwarder.stop()
            await server.wait_for(lambda: ("forwarder-down", NAME) in server.history, timeout=5)
            assert NAME not in server.registered
            assert server.history == [("register", NAME), ("forwarder-down", NAME)]
            # The liveness stream is independent of the forwarder's own server.
            assert reg.state is RegistrationState.REGISTERED
        finally:
            await reg.stop()
            await server.stop()
            await forwarder.stop()

    run(body())


def test_RegistrarServer_protocol(sockdir: str) -> None:
    """Wire level, with a raw client: duplicate error, liveness, unregistration, socket file."""
    from nsm_forwarder.proto import forwarderregistrar_pb2 as pb
    from nsm_forwarder.proto import forwarderregistrar_pb2_grpc as pb_grpc

    path = os.path.join(sockdir, "registrar.sock")

    async def body() -> None:
        with open(path, "w"):
            pass  # a stale file at the path must not prevent listening
        server = RegistrarServer(path, liveness_interval=0.1, watch_forwarders=False)
        await server.start()
        try:
            assert os.stat(path).st_mode & 0o777 == 0o600
            async with grpc.aio.insecure_channel("unix://" + path) as channel:
                reg = pb_grpc.ForwarderRegistrationStub(channel)
                unreg = pb_grpc.ForwarderUnRegistrationStub(channel)
                request = pb.ForwarderRegistrationRequest(forwarder_name="x", forwarder_socket="s")
                assert (await reg.RequestForwarderRegistration(request)).registered
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await reg.RequestForwarderRegistration(request)
                assert err.value.code() == grpc.StatusCode.UNKNOWN
                assert err.value.details() == "forwarder with name x already registered"

                call = reg.RequestLiveness()
                for _ in range(3):  # the first one at once, then every 0.1 s
                    assert await call.read() == empty_pb2.Empty()
                call.cancel()

                unknown = pb.ForwarderUnRegistrationRequest(forwarder_name="nobody")
                assert (await unreg.RequestForwarderUnRegistration(unknown)).un_registered
                known = pb.ForwarderUnRegistrationRequest(forwarder_name="x")
                assert (await unreg.RequestForwarderUnRegistration(known)).un_registered
                assert server.registered == {}
                assert server.history == [
                    ("register", "x"),
                    ("unregister", "nobody"),
                    ("unregister", "x"),
                ]
        finally:
            await server.stop()
        assert not os.path.exists(path)

    run(body())
