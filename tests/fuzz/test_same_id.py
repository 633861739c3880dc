"""Concurrent Requests with one cross-connect id: whatever the interleaving, and whichever of
them their clients give up on, the id owns exactly one set of interfaces (a repeated Request is
an update), and Close takes it away.

The race these catch: a client that cancels (or whose deadline passes) leaves its Request
queued at the id's actor while the count of calls in flight drops; the actor was then parked
with a state taken before that Request ran, and the interfaces it built were never removed
(now an actor is parked only once every message told to it is handled: actors/loop_actor.py
``idle``)."""

from __future__ import annotations

import concurrent.futures
import random
import time
from collections.abc import Iterator

import grpc
import pytest

from nsm_forwarder.proto import crossconnect_pb2
from tests.conftest import Node
from tests.fuzz.state import close_everything, settled
from tests.helpers import IS_ROOT, BackgroundLoop, Pod, Pods, local_xcon

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")


def variants(xid: str, a: Pod, b: Pod, n: int, tag: str) -> list[crossconnect_pb2.CrossConnect]:
    """``n`` Requests for ``xid`` that differ only in their interface names."""
    return [local_xcon(xid, a, b, src_name=f"{tag}s{i}", dst_name=f"{tag}d{i}") for i in range(n)]


@pytest.fixture(scope="module")
def slow_node(bg_loop: BackgroundLoop) -> Iterator[Node]:
    """A forwarder whose driver takes 400 ms per call: wide windows for the interleavings."""
    made = Node(bg_loop, NSM_FORWARDER_FAULTS="driver:delay=400ms")
    try:
        made.start()
        yield made
    finally:
        made.close()


def test_same_id_cancelled_requests_leave_one_set(slow_node: Node, module_pods: Pods) -> None:
    """Two Requests given up by their clients while the first still runs (their deadlines
    pass: the first is rolled back, the second never started, see tests/bounds), then one more
    that waits, queued behind them: afterwards exactly the last one's interfaces exist and the
    forwarder's state agrees; after Close, none."""
    a, b = module_pods.make(), module_pods.make()
    first, second, last = variants("cancel-1", a, b, 3, "c")
    stub = slow_node.forwarder.stub()
    gave_up = [stub.Request.future(first, timeout=0.1)]
    time.sleep(0.2)  # the first is in the driver; its client has given up
    gave_up.append(stub.Request.future(second, timeout=0.1))
    for call in gave_up:
        assert call.exception() is not None  # DEADLINE_EXCEEDED, on the client's side
    assert stub.Request(last, timeout=30) == last
    assert settled(slow_node.forwarder) == []
    assert (a.links(), b.links()) == (["cs2"], ["cd2"])
    stub.Close(last, timeout=30)
    assert (a.links(), b.links()) == ([], [])


def test_same_id_six_concurrent_requests_stress(node: Node, module_pods: Pods) -> None:
    """Six concurrent Requests of one id, some given up by their clients, many times over:
    one set per id every time, and it is the one the forwarder reports."""
    a, b = module_pods.make(), module_pods.make()
    stub = node.forwarder.stub()
    rng = random.Random(6)

    def send(xcon: crossconnect_pb2.CrossConnect) -> str:
        time.sleep(rng.random() * 0.01)
        try:
            stub.Request(xcon, timeout=rng.choice([30.0, 30.0, 0.003, 0.01, 0.03]))
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.details()
            return "gave up"
        return "OK"

    for run in range(30):
        xcons = variants(f"six-{run % 3}", a, b, 6, f"r{run}")
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(send, xcons))
        assert settled(node.forwarder) == [], f"run {run}"
        if run % 2:
            assert close_everything(node.forwarder) == []
            assert (a.links(), b.links()) == ([], [])
    assert close_everything(node.forwarder) == []
    assert (a.links(), b.links()) == ([], [])


def test_same_id_concurrent_requests_after_actor_crash(
    node_factory: type, module_pods: Pods
) -> None:
    """The id's actor crashed (injected, on its first message); six concurrent Requests then
    find it dead together: one replacement serves them all, so one set of interfaces."""
    node = node_factory(NSM_FORWARDER_FAULTS="connection:crash:times=1").start()
    a, b = module_pods.make(), module_pods.make()
    stub = node.forwarder.stub()
    xcons = variants("crash-1", a, b, 6, "k")
    with pytest.raises(grpc.RpcError) as crashed:
        stub.Request(xcons[0], timeout=30)
    assert crashed.value.code() == grpc.StatusCode.UNAVAILABLE
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda x: stub.Request(x, timeout=30), xcons))
    assert replies == xcons
    assert settled(node.forwarder) == []
    assert len(a.links()) == 1 and len(b.links()) == 1
    assert close_everything(node.forwarder) == []
    assert (a.links(), b.links()) == ([], [])
