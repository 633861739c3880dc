"""Bounds (issue 14, item 4) on a real forwarder over its unix socket: message size, concurrent
Request/Close calls, monitor subscribers, a slow subscriber's queue, the live cross-connect cap,
and a Request whose deadline passes (rolled back, never half-done)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nsm_forwarder.actors.store import read_records
from nsm_forwarder.proto import crossconnect_pb2, crossconnect_pb2_grpc, forwarder_pb2_grpc
from tests.conftest import Node, needs_root
from tests.helpers import BackgroundLoop, Pods, local_xcon, numbered_xcon, wait_until

pytestmark = needs_root


def store_rows(node: Node) -> dict[str, crossconnect_pb2.CrossConnect | None]:
    """id -> the stored cross-connect (None for a row without one) of a node's Store."""
    state = os.path.join(node.workdir, "forwarder-state", node.forwarder.name)
    return {
        r.id: crossconnect_pb2.CrossConnect.FromString(r.xcon) if r.xcon else None
        for r in read_records(state)
    }


def reported(node: Node) -> dict[str, crossconnect_pb2.CrossConnect]:
    """The INITIAL_STATE_TRANSFER a new subscriber gets."""
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=10)
    try:
        return dict(next(events).cross_connects)
    finally:
        events.cancel()


def status_of(fn: object, *args: object, **kw: object) -> grpc.RpcError:
    """The RpcError a call ends with (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    return info.value  # type: ignore[no-any-return]


@contextlib.contextmanager
def running(loop: BackgroundLoop, **env: str) -> Iterator[Node]:
    """A started Node (forwarder and registrar stand-in), closed at the end."""
    made = Node(loop, **env)
    try:
        made.start()
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def bounded(bg_loop: BackgroundLoop) -> Iterator[Node]:
    """A forwarder with small bounds."""
    with running(
        bg_loop,
        NSM_FORWARDER_MAX_MESSAGE_SIZE="65536",
        NSM_FORWARDER_MAX_MONITOR_SUBSCRIBERS="3",
        NSM_FORWARDER_SUBSCRIBER_QUEUE="4",
        NSM_FORWARDER_MAX_CROSS_CONNECTS="2",
    ) as node:
        # nsmd (the stand-in) holds one stream of each monitor service
        name = node.forwarder.name
        wait_until(lambda: name in node.registrar.initial_state, 10, "nsmd's subscription")
        yield node


@pytest.fixture(scope="module")
def slow(bg_loop: BackgroundLoop) -> Iterator[Node]:
    """A forwarder whose every data-plane call takes a second longer, and every message of a
    cross-connect's actor 200 ms (so concurrent Requests are all admitted before any of them
    has written to the Store); live cross-connects at most 2."""
    with running(
        bg_loop,
        NSM_FORWARDER_FAULTS="driver:delay=1s, connection:delay=200ms",
        NSM_FORWARDER_MAX_CROSS_CONNECTS="2",
    ) as node:
        yield node


def test_a_message_over_max_message_size_is_refused(bounded: Node, pods: Pods) -> None:
    a, b = pods.make(), pods.make()
    xcon = local_xcon("big-1", a, b)
    xcon.source.mechanism.parameters["padding"] = "x" * 70000
    error = status_of(bounded.forwarder.stub().Request, xcon, timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert "65536" in (error.details() or ""), error.details()
    assert a.links() == [] and b.links() == [] and "big-1" not in store_rows(bounded)
    stub = bounded.forwarder.stub()
    xcon.source.mechanism.parameters["padding"] = "x" * 1000  # under the bound: fine
    stub.Request(xcon, timeout=10)
    assert a.links() == ["nsm0"]
    stub.Close(xcon, timeout=10)
    assert a.links() == []


def test_live_cross_connects_are_capped_but_updates_work(bounded: Node, pods: Pods) -> None:
    a, b = pods.make(), pods.make()
    stub = bounded.forwarder.stub()
    first, second, third = (numbered_xcon("cap", i, a, b, 41) for i in range(3))
    try:
        stub.Request(first, timeout=10)
        stub.Request(second, timeout=10)
        error = status_of(stub.Request, third, timeout=10)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "max_cross_connects = 2" in (error.details() or ""), error.details()
        assert "cap2" not in a.links() and "cap-2" not in store_rows(bounded)
        # a repeated Request for a known id is an update: it works at the cap
        update = numbered_xcon("cap", 0, a, b, 41, ends=("upd", "upd"))
        stub.Request(update, timeout=10)
        assert sorted(a.links()) == ["cap1", "upd0"]
        stub.Close(update, timeout=10)
        stub.Request(third, timeout=10)  # room again
        assert sorted(a.links()) == ["cap1", "cap2"]
    finally:
        for xcon in (first, second, third):
            stub.Close(xcon, timeout=10)
    assert a.links() == [] and b.links() == []


def wait_for_a_free_slot(open_stream: Callable[[], Any], what: str) -> None:
    """Until a stream opened with ``open_stream`` gets its first message (each refusal before
    must be RESOURCE_EXHAUSTED): the server noticed a closed stream and freed its slot."""

    def opens() -> bool:
        stream = open_stream()
        try:
            next(stream)
            return True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            return False
        finally:
            stream.cancel()

    wait_until(opens, 10, f"a free {what} slot")


def test_monitor_subscribers_are_capped(bounded: Node) -> None:
    """max_monitor_subscribers = 3: nsmd's stream and two more of each monitor service."""
    monitor = bounded.forwarder.xcon_monitor()
    streams = [monitor.MonitorCrossConnects(empty_pb2.Empty(), timeout=30) for _ in range(2)]
    try:
        for stream in streams:
            next(stream)  # the initial state: subscribed
        error = status_of(next, monitor.MonitorCrossConnects(empty_pb2.Empty(), timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "max_monitor_subscribers = 3" in (error.details() or ""), error.details()
        streams.pop().cancel()
        wait_for_a_free_slot(
            lambda: monitor.MonitorCrossConnects(empty_pb2.Empty(), timeout=10), "subscriber"
        )
        mechanisms = forwarder_pb2_grpc.MechanismsMonitorStub(bounded.forwarder.channel())
        mine = [mechanisms.MonitorMechanisms(empty_pb2.Empty(), timeout=30) for _ in range(2)]
        try:
            for stream in mine:
                next(stream)
            extra = mechanisms.MonitorMechanisms(empty_pb2.Empty(), timeout=10)
            error = status_of(next, extra)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "max_monitor_subscribers = 3" in (error.details() or ""), error.details()
        finally:
            for stream in mine:
                stream.cancel()
    finally:
        for stream in streams:
            stream.cancel()


def test_health_watch_streams_are_capped(bounded: Node) -> None:
    """max_monitor_subscribers = 3 bounds grpc.health.v1.Health/Watch streams too."""
    health = health_pb2_grpc.HealthStub(bounded.forwarder.channel())
    request = health_pb2.HealthCheckRequest(service="")
    streams = [health.Watch(request, timeout=30) for _ in range(3)]
    try:
        for stream in streams:
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        error = status_of(next, health.Watch(request, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "max_monitor_subscribers = 3" in (error.details() or ""), error.details()
        streams.pop().cancel()
        wait_for_a_free_slot(lambda: health.Watch(request, timeout=10), "Watch")
    finally:
        for stream in streams:
            stream.cancel()


def test_a_slow_subscriber_is_dropped(bounded: Node, pods: Pods) -> None:
    """A subscriber that stops reading is dropped once subscriber_queue events wait for it;
    the forwarder goes on and a new subscriber gets the current state."""
    a, b = pods.make(), pods.make()
    stub = bounded.forwarder.stub()
    channel = grpc.insecure_channel(
        "unix://" + bounded.forwarder.socket, options=[("grpc.http2.bdp_probe", 0)]
    )
    lazy = crossconnect_pb2_grpc.MonitorCrossConnectStub(channel).MonitorCrossConnects(
        empty_pb2.Empty(), timeout=120
    )
    xcon = local_xcon("slow-1", a, b)
    xcon.source.mechanism.parameters["padding"] = "y" * 30000  # large events fill buffers fast
    try:
        next(lazy)  # subscribed; from now on it reads nothing
        for _ in range(60):  # every Request of a known id is an update: one UPDATE event each
            stub.Request(xcon, timeout=20)
            if "too slow; dropping it" in bounded.forwarder.log():
                break
        got = 0
        with pytest.raises(grpc.RpcError) as info:
            for _ in lazy:
                got += 1
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
        assert "subscriber_queue" in (info.value.details() or ""), info.value.details()
        assert got < 60
        assert reported(bounded)["slow-1"].source.mechanism.parameters["name"] == "nsm0"
    finally:
        lazy.cancel()
        channel.close()
        stub.Close(xcon, timeout=20)
    assert a.links() == []


def wait_for_log(node: Node, text: str, count: int = 1) -> None:
    wait_until(lambda: node.forwarder.log().count(text) >= count, 30, repr(text))


def test_a_new_request_past_its_deadline_is_rolled_back(slow: Node, pods: Pods) -> None:
    a, b = pods.make(), pods.make()
    stub = slow.forwarder.stub()
    xcon = local_xcon("late-1", a, b)
    error = status_of(stub.Request, xcon, timeout=0.6)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    wait_for_log(slow, "request id=late-1 failed")
    assert "deadline passed while it was applied; rolled back (removed)" in slow.forwarder.log()
    assert a.links() == [] and b.links() == []
    assert "late-1" not in store_rows(slow) and "late-1" not in reported(slow)
    stub.Request(xcon, timeout=20)  # with time enough it is made, and is a first Request
    assert a.links() == ["nsm0"] and b.links() == ["nsm0"]
    stub.Close(xcon, timeout=20)
    assert a.links() == [] and b.links() == []


def test_an_update_past_its_deadline_puts_the_previous_back(slow: Node, pods: Pods) -> None:
    a, b = pods.make(), pods.make()
    stub = slow.forwarder.stub()
    old = local_xcon("late-2", a, b)
    new = local_xcon("late-2", a, b, src_name="nsm1", dst_name="nsm1")
    stub.Request(old, timeout=20)
    try:
        error = status_of(stub.Request, new, timeout=0.8)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        wait_for_log(slow, "request id=late-2 failed")
        assert "rolled back (the previous cross-connect put back)" in slow.forwarder.log()
        assert a.links() == ["nsm0"] and b.links() == ["nsm0"]
        stored = store_rows(slow)["late-2"]
        assert stored is not None and stored.source.mechanism.parameters["name"] == "nsm0"
        assert reported(slow)["late-2"].source.mechanism.parameters["name"] == "nsm0"
    finally:
        stub.Close(old, timeout=20)
    assert a.links() == [] and b.links() == [] and "late-2" not in store_rows(slow)


def test_a_request_whose_deadline_passes_in_the_queue_is_not_started(
    slow: Node, pods: Pods
) -> None:
    """A second Request for an id, queued behind a slow first one, whose deadline passes
    before its turn: it changes nothing, and the first one's cross-connect stands."""
    a, b = pods.make(), pods.make()
    stub = slow.forwarder.stub()
    first = local_xcon("late-3", a, b)
    second = local_xcon("late-3", a, b, src_name="nsm1", dst_name="nsm1")
    before = slow.forwarder.log().count("injecting delay into connection (apply)")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            made = pool.submit(stub.Request, first, timeout=20)
            wait_for_log(slow, "injecting delay into connection (apply)", before + 1)
            error = status_of(stub.Request, second, timeout=0.1)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
            made.result()
        wait_for_log(slow, "request id=late-3 failed")
        assert "deadline passed before it started; nothing was changed" in slow.forwarder.log()
        assert a.links() == ["nsm0"] and b.links() == ["nsm0"]
        stored = store_rows(slow)["late-3"]
        assert stored is not None and stored.source.mechanism.parameters["name"] == "nsm0"
    finally:
        stub.Close(first, timeout=20)
    assert a.links() == [] and b.links() == []


def test_concurrent_new_ids_never_pass_the_cap(slow: Node, pods: Pods) -> None:
    """With one of two places left, of four new ids requested at once exactly one is made."""
    a, b = pods.make(), pods.make()
    stub = slow.forwarder.stub()
    first = numbered_xcon("race", 0, a, b, 43)
    rest = [numbered_xcon("race", i, a, b, 43) for i in range(1, 5)]
    try:
        stub.Request(first, timeout=20)

        def code_of(xcon: crossconnect_pb2.CrossConnect) -> grpc.StatusCode:
            try:
                stub.Request(xcon, timeout=20)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]

        with concurrent.futures.ThreadPoolExecutor(len(rest)) as pool:
            codes = list(pool.map(code_of, rest))
        assert sorted(c.name for c in codes) == ["OK"] + ["RESOURCE_EXHAUSTED"] * 3, codes
        assert len(a.links()) == 2 and len(store_rows(slow)) == 2
    finally:
        for xcon in (first, *rest):
            stub.Close(xcon, timeout=20)
    assert a.links() == [] and b.links() == []


def test_concurrent_calls_are_capped(bg_loop: BackgroundLoop, pods: Pods) -> None:
    """Two calls whose actors hang fill max_concurrent_rpcs = 2 even after their clients left;
    a third is refused until the hung actors are replaced."""
    a, b = pods.make(), pods.make()
    with running(
        bg_loop,
        NSM_FORWARDER_FAULTS="connection:hang:times=2",
        NSM_FORWARDER_MAX_CONCURRENT_RPCS="2",
        NSM_FORWARDER_OPERATION_TIMEOUT="2s",
    ) as node:
        stub = node.forwarder.stub()
        hung = [numbered_xcon("hung", i, a, b, 42) for i in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(status_of, stub.Request, x, timeout=1) for x in hung]
            for call in calls:
                assert call.result().code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for_log(node, "injecting hang into connection", 2)
        third = numbered_xcon("hung", 2, a, b, 42)
        error = status_of(stub.Request, third, timeout=5)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "max_concurrent_rpcs = 2" in (error.details() or ""), error.details()
        assert a.links() == []

        def served() -> bool:
            try:
                stub.Request(third, timeout=5)
                return True
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return False

        wait_until(served, 30, "the hung calls to be given up")
        assert a.links() == ["hung2"]
        stub.Close(third, timeout=10)
        for xcon in hung:
            stub.Close(xcon, timeout=10)
        assert a.links() == [] and b.links() == []
