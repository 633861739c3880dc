"""Crash-safe state: restarts (also after kill -9) keep every cross-connect, orphans are swept,
pod death is reported, and slow subscribers never hold anything up."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from nsm_forwarder.actors.frontend import CrossConnectMonitorService
from nsm_forwarder.actors.reconcile import reconcile
from nsm_forwarder.actors.store import Store, read_records
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.linux.netns import all_namespaces
from nsm_forwarder.drivers.plan import plan_from_xcon
from nsm_forwarder.proto import connection_pb2, crossconnect_pb2
from tests.conftest import Node, needs_root
from tests.helpers import Pod, Pods, local_xcon, numbered_xcon, unique, wait_until


def restart(node: Node) -> None:
    """Start the same forwarder again (same name, same state dir) and wait for registration."""
    assert node.registrar is not None
    name = node.forwarder.name
    before = node.registrar.history.count(("register", name))
    node.forwarder.start()
    wait_until(
        lambda: node.registrar.history.count(("register", name)) > before, 20, "re-registration"
    )


def initial_state(node: Node) -> crossconnect_pb2.CrossConnectEvent:
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=10)
    first = next(events)
    events.cancel()
    assert first.type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    return first


@needs_root
def test_state_kill9_restart_keeps_cross_connects(node_factory: type, pods: Pods) -> None:
    node: Node = node_factory().start()
    a, b, c = pods.make(), pods.make(), pods.make()
    x1 = local_xcon("keep-1", a, b, src_name="k1", dst_name="k1")
    x1.source.mechanism.parameters["workspace"] = "nsm-1"
    x1.destination.mechanism.parameters["workspaceNseName"] = "icmp-responder"
    x2 = local_xcon(
        "keep-2", a, c, src_name="k2", dst_name="k2", src_ip="10.30.2.1/30", dst_ip="10.30.2.2/30"
    )
    stub = node.forwarder.stub()
    stub.Request(x1, timeout=15)
    stub.Request(x2, timeout=15)
    node.forwarder.kill()  # SIGKILL: no shutdown, no unregistration
    restart(node)
    first = initial_state(node)
    assert dict(first.cross_connects) == {"keep-1": x1, "keep-2": x2}
    assert a.ping("10.30.1.2") and a.ping("10.30.2.2")
    stub = node.forwarder.stub()
    stub.Close(x1, timeout=15)
    stub.Close(x2, timeout=15)
    assert a.links() == [] and b.links() == [] and c.links() == []
    assert "2 cross-connects restored (0 rebuilt" in node.forwarder.log()


@needs_root
def test_state_restart_rebuilds_missing_interfaces(node_factory: type, pods: Pods) -> None:
    node: Node = node_factory().start()
    a, b = pods.make(), pods.make()
    xcon = local_xcon("rebuild-1", a, b)
    node.forwarder.stub().Request(xcon, timeout=15)
    assert node.forwarder.terminate() == 0
    a.ip("link", "del", "nsm0")  # someone removed it while we were down
    restart(node)
    assert dict(initial_state(node).cross_connects) == {"rebuild-1": xcon}
    assert a.links() == ["nsm0"] and a.ping("10.30.1.2")
    node.forwarder.stub().Close(xcon, timeout=15)
    assert a.links() == [] and b.links() == []


@needs_root
def test_state_deleted_state_file_sweeps_orphans(node_factory: type, pods: Pods) -> None:
    node: Node = node_factory().start()
    a, b = pods.make(), pods.make()
    node.forwarder.stub().Request(local_xcon("orphan-1", a, b), timeout=15)
    b.ip("link", "add", "mine0", "type", "veth", "peer", "name", "mine1")  # not ours
    node.forwarder.kill()
    state = os.path.join(node.workdir, "forwarder-state", node.forwarder.name)
    for name in os.listdir(state):
        os.unlink(os.path.join(state, name))
    restart(node)
    assert a.links() == [] and sorted(b.links()) == ["mine0", "mine1"]
    assert dict(initial_state(node).cross_connects) == {}
    assert "1 orphan interfaces removed" in node.forwarder.log()


@needs_root
def test_state_pod_death_sends_down_update_and_close_cleans(node_factory: type, pods: Pods) -> None:
    node: Node = node_factory(CROSS_CONNECT_LIVENESS_CHECK_INTERVAL="200ms").start()
    a, b = pods.make(), pods.make()
    xcon = local_xcon("death-1", a, b)
    stub = node.forwarder.stub()
    stub.Request(xcon, timeout=15)
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=20)
    assert next(events).type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    pods.made.remove(b)
    b.ip("link", "show")  # the pod exists until now
    os.system(f"ip netns del {b.name}")
    update = next(events)
    assert update.type == crossconnect_pb2.UPDATE
    down = update.cross_connects["death-1"]
    assert down.destination.state == connection_pb2.DOWN
    assert down.source.state == connection_pb2.UP
    stub.Close(xcon, timeout=15)
    assert next(events).type == crossconnect_pb2.DELETE
    events.cancel()
    assert a.links() == []


@needs_root
def test_state_stalled_subscriber_does_not_slow_requests(node: Node, pods: Pods) -> None:
    a, b = pods.make(), pods.make()
    channel = node.forwarder.channel()
    from nsm_forwarder.proto import crossconnect_pb2_grpc

    stalled = crossconnect_pb2_grpc.MonitorCrossConnectStub(channel).MonitorCrossConnects(
        empty_pb2.Empty(), timeout=60
    )
    next(stalled)  # subscribed; never read again
    live = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=60)
    next(live)
    seen: list[tuple[int, str]] = []

    def read() -> None:
        try:
            for event in live:
                seen.append((event.type, next(iter(event.cross_connects))))
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stub = node.forwarder.stub()
    xcons = [numbered_xcon("slow", i, a, b, 60, ends=("s", "s")) for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda x: stub.Request(x, timeout=10), xcons))
        list(pool.map(lambda x: stub.Close(x, timeout=10), xcons))
    wait_until(lambda: len(seen) == 60, 10, "60 events on the live subscriber")
    assert sorted(seen) == sorted(
        [(crossconnect_pb2.UPDATE, x.id) for x in xcons]
        + [(crossconnect_pb2.DELETE, x.id) for x in xcons]
    )
    stalled.cancel()
    live.cancel()


def test_state_overflowing_subscriber_is_dropped() -> None:
    async def scenario() -> None:
        service = CrossConnectMonitorService(asyncio.Event())
        service.queue_limit = 4
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        service.queues["s1"] = queue
        for i in range(10):
            service._enqueue("s1", i + 1, bytes([i + 1]))
        assert "s1" not in service.queues  # dropped: no more events queued
        items = [queue.get_nowait()[1] for _ in range(queue.qsize())]
        assert items == [b"\x01", b"\x02", b"\x03", b""]  # then the overflow marker

    asyncio.run(scenario())


@needs_root
def test_state_reconcile_settles_interrupted_operations(pods: Pods, tmp_path: object) -> None:
    """Crashes between Store writes and data-plane steps, replayed on a real pool and Store."""
    a, b = pods.make(), pods.make()
    store = Store(str(tmp_path))
    owner = unique("own")
    pool = WorkerPool(1, "kernel", init={"owner": owner, "src_ip": "127.0.0.1", "vxlan_port": 4789})
    pool.start()
    try:

        def xcon(n: int) -> crossconnect_pb2.CrossConnect:
            return numbered_xcon("int", n, a, b, 70, ends=("i", "i"))

        def plan(x: crossconnect_pb2.CrossConnect) -> dict[str, Any]:
            return plan_from_xcon(x, mtu=1500)

        def commit(x: crossconnect_pb2.CrossConnect) -> None:
            store.commit(x.id, x.SerializeToString(), plan(x), pool.call("apply", plan(x)))

        # 1. first Request interrupted after the data plane was built
        store.begin_apply("int-1", plan(xcon(1)))
        pool.call("apply", plan(xcon(1)))
        # 2. Close interrupted after the row was marked
        commit(xcon(2))
        store.begin_close("int-2")
        # 3. update interrupted: old committed, new half-built with the same names
        commit(xcon(3))
        new = plan(numbered_xcon("int", 3, a, b, 71, ends=("i", "i")))
        store.begin_apply("int-3", new)
        pool.call("apply", new)

        report = reconcile(store, pool, set(all_namespaces()))
        assert [r.id for r in report.restored] == ["int-3"]
        assert (report.swept_requests, report.finished_closes) == (2, 1)
        assert a.links() == ["i3"] and b.links() == ["i3"]
        assert a.ping("10.70.3.2")  # the previous cross-connect, rebuilt
        assert [(r.id, r.pending) for r in store.load()] == [("int-3", None)]
    finally:
        pool.stop()
        store.close()


@needs_root
def test_state_request_error_keeps_store_clean(node: Node, pods: Pods) -> None:
    a: Pod = pods.make()
    b: Pod = pods.make()
    xcon = local_xcon("clean-1", a, b)
    xcon.destination.mechanism.parameters["netnsInode"] = "4242424242"
    with pytest.raises(grpc.RpcError):
        node.forwarder.stub().Request(xcon, timeout=15)
    state = os.path.join(node.workdir, "forwarder-state", node.forwarder.name)
    assert "clean-1" not in [r.id for r in read_records(state)]


@needs_root
def test_state_start_up_scan_is_not_one_operation(node_factory: type) -> None:
    """Reconcile's node-wide scan (observe) gets the start-up deadline, not one operation's: a
    scan slower than operation_timeout (here by an injected delay; on a busy node with many
    namespaces by itself) no longer fails the start-up, which would make the pod crash-loop."""
    node: Node = node_factory(
        NSM_FORWARDER_OPERATION_TIMEOUT="1s", NSM_FORWARDER_FAULTS="worker:delay=1500ms:times=1"
    ).start()
    log = node.forwarder.log()
    assert "injecting delay into worker-" in log and "(observe)" in log
    assert "start-up failed" not in log
    assert "startup completed" in log
