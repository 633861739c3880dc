"""Supervision: restarts keep the promises, and too many restarts stop the forwarder."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import empty_pb2

from nsm_forwarder.proto import crossconnect_pb2
from tests.conftest import Node, needs_root
from tests.helpers import Pods, local_xcon, numbered_xcon, wait_until

pytestmark = needs_root


def test_supervision_restart_limit_exits_3(node_factory: type, pods: Pods) -> None:
    node: Node = node_factory(
        NSM_FORWARDER_FAULTS="driver:crash",  # every data-plane call kills its worker
        NSM_FORWARDER_MAX_RESTARTS="3",
        NSM_FORWARDER_RESTART_WINDOW="30s",
    ).start()
    a, b = pods.make(), pods.make()
    proc = node.forwarder.proc
    assert proc is not None
    for i in range(3):
        with pytest.raises(grpc.RpcError) as err:
            node.forwarder.stub().Request(local_xcon(f"lim-{i}", a, b), timeout=15)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        if proc.poll() is not None:
            break
    assert proc.wait(30) == 3
    log = node.forwarder.log()
    assert "restart intensity exceeded" in log and "exit code 3" in log
    assert a.links() == [] and b.links() == []


def test_supervision_monitor_restart_keeps_subscribers(node_factory: type, pods: Pods) -> None:
    # the Monitor's messages: 1 Subscribe (the stand-in), 1 Subscribe (ours), the watchdog's
    # queries, then our events; crash it once, on the UPDATE of the first Request or soon after
    node: Node = node_factory(NSM_FORWARDER_FAULTS="monitor:crash:after=3:times=1").start()
    a, b = pods.make(), pods.make()
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=30)
    assert next(events).type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    stub = node.forwarder.stub()
    xcons = [numbered_xcon("mr", i, a, b, 61) for i in range(3)]
    for xcon in xcons:
        stub.Request(xcon, timeout=15)
    wait_until(lambda: "restarting it from the Store" in node.forwarder.log(), 15, "restart")
    seen: dict[str, crossconnect_pb2.CrossConnect] = {}
    while len(seen) < 3:  # every cross-connect reaches the subscriber, crash or not
        event = next(events)
        assert event.type == crossconnect_pb2.UPDATE
        seen.update(event.cross_connects)
    assert seen == {x.id: x for x in xcons}
    stub.Close(xcons[0], timeout=15)
    assert next(events).type == crossconnect_pb2.DELETE
    events.cancel()
    assert "restarted monitor" in node.forwarder.log()
