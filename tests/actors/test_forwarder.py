"""The whole forwarder, for real: a `nsm-forwarder run` process with worker processes, a
registrar stand-in, pod namespaces, veth pairs and pings, driven over the unix-socket gRPC API."""

from __future__ import annotations

import concurrent.futures
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nsm_forwarder.proto import (
    connectioncontext_pb2,
    crossconnect_pb2,
    forwarder_pb2_grpc,
)
from tests.conftest import Node, needs_root
from tests.helpers import BackgroundLoop, Pod, Pods, local_xcon, numbered_xcon, wait_until

pytestmark = needs_root


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda n: f"{n}-workers")
def node(request: pytest.FixtureRequest, bg_loop: BackgroundLoop) -> Iterator[Node]:
    """The slice's tests run against forwarders with worker pools of 1, 2 and 4 processes."""
    made = Node(bg_loop, NSM_FORWARDER_WORKERS=str(request.param))
    made.workers = request.param  # type: ignore[attr-defined]
    try:
        made.start()
        yield made
    finally:
        made.close()


@pytest.fixture
def two_pods(pods: Pods) -> tuple[Pod, Pod]:
    return pods.make(), pods.make()


def test_forwarder_mechanisms_first_update_and_stream_stays_open(node: Node) -> None:
    stub = forwarder_pb2_grpc.MechanismsMonitorStub(node.forwarder.channel())
    call = stub.MonitorMechanisms(empty_pb2.Empty(), timeout=1.5)
    first = next(call)
    assert [m.type for m in first.local_mechanisms] == ["KERNEL_INTERFACE"]
    remote = ["VXLAN", "WIREGUARD"] if shutil.which("wireguard-go") else ["VXLAN"]
    assert [(m.type, dict(m.parameters)) for m in first.remote_mechanisms] == [
        (t, {"src_ip": "127.0.0.1"}) for t in remote
    ]
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # still open, nothing more


def test_forwarder_grpc_health_and_http_probes(node: Node) -> None:
    stub = health_pb2_grpc.HealthStub(node.forwarder.channel())
    for service in ("", "forwarder.Forwarder", "crossconnect.MonitorCrossConnect"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    port = node.forwarder.health_port()
    for path in ("liveness", "readiness"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"OK\n"


def test_forwarder_local_xcon_pings(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    xcon = local_xcon("ping-1", a, b, src_name="cli0", dst_name="nse0")
    reply = node.forwarder.stub().Request(xcon, timeout=15)
    assert reply == xcon  # echoed intact, source.context included
    assert a.links() == ["cli0"] and b.links() == ["nse0"]
    assert "10.30.1.1/30" in a.ip("addr", "show", "cli0")
    assert "10.30.1.2/30" in b.ip("addr", "show", "nse0")
    assert a.ping("10.30.1.2") and b.ping("10.30.1.1")
    node.forwarder.stub().Close(xcon, timeout=15)
    assert a.links() == [] and b.links() == []


def test_forwarder_same_name_on_both_ends(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    xcon = local_xcon("same-1", a, b, src_name="nsm0", dst_name="nsm0")
    node.forwarder.stub().Request(xcon, timeout=15)
    assert a.links() == ["nsm0"] and b.links() == ["nsm0"]
    assert a.ping("10.30.1.2")
    node.forwarder.stub().Close(xcon, timeout=15)
    assert a.links() == [] and b.links() == []


def test_forwarder_routes_and_neighbours(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    xcon = local_xcon(
        "routes-1",
        a,
        b,
        dst_routes=[connectioncontext_pb2.Route(prefix="10.77.0.0/16")],
        src_routes=[connectioncontext_pb2.Route(prefix="10.88.0.0/16")],
        ip_neighbors=[
            connectioncontext_pb2.IpNeighbor(ip="10.30.1.2", hardware_address="02:00:00:aa:bb:cc")
        ],
    )
    node.forwarder.stub().Request(xcon, timeout=15)
    assert "10.77.0.0/16 via 10.30.1.2 dev nsm0" in a.ip("route", "show")
    assert "10.88.0.0/16 via 10.30.1.1 dev nsm0" in b.ip("route", "show")
    neigh = a.ip("neigh", "show", "dev", "nsm0")
    assert "10.30.1.2 lladdr 02:00:00:aa:bb:cc PERMANENT" in neigh
    node.forwarder.stub().Close(xcon, timeout=15)
    assert a.links() == [] and b.links() == []


def test_forwarder_update_replaces_interfaces(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    stub = node.forwarder.stub()
    stub.Request(local_xcon("upd-1", a, b, src_name="if1_src", dst_name="if1_dst"), timeout=15)
    assert a.ping("10.30.1.2")
    new = local_xcon(
        "upd-1",
        a,
        b,
        src_name="if2_src",
        dst_name="if2_dst",
        src_ip="10.30.2.1/30",
        dst_ip="10.30.2.2/30",
    )
    assert stub.Request(new, timeout=15) == new
    assert a.links() == ["if2_src"] and b.links() == ["if2_dst"]
    assert a.ping("10.30.2.2")
    stub.Close(new, timeout=15)
    assert a.links() == [] and b.links() == []


def test_forwarder_failed_update_keeps_previous(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    stub = node.forwarder.stub()
    old = local_xcon("updfail-1", a, b, src_name="old0", dst_name="old0")
    stub.Request(old, timeout=15)
    b.ip("link", "add", "taken0", "type", "veth", "peer", "name", "taken1")
    bad = local_xcon("updfail-1", a, b, src_name="new0", dst_name="taken0")
    with pytest.raises(grpc.RpcError) as err:
        stub.Request(bad, timeout=15)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert a.links() == ["old0"] and sorted(b.links()) == ["old0", "taken0", "taken1"]
    assert a.ping("10.30.1.2")
    stub.Close(bad, timeout=15)  # closes what is applied: the old one
    assert a.links() == [] and sorted(b.links()) == ["taken0", "taken1"]


def test_forwarder_close_then_request_again(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    stub = node.forwarder.stub()
    xcon = local_xcon("again-1", a, b)
    stub.Request(xcon, timeout=15)
    stub.Close(xcon, timeout=15)
    assert a.links() == [] and b.links() == []
    stub.Close(xcon, timeout=15)  # double close is fine
    stub.Request(xcon, timeout=15)
    assert a.ping("10.30.1.2")
    stub.Close(xcon, timeout=15)


def test_forwarder_close_unknown_id_is_ok(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    node.forwarder.stub().Close(local_xcon("never-1", a, b), timeout=15)
    node.forwarder.stub().Close(crossconnect_pb2.CrossConnect(id="never-2"), timeout=15)


def test_forwarder_monitor_initial_update_delete(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    stub = node.forwarder.stub()
    kept = local_xcon("mon-kept", a, b, src_name="k0", dst_name="k0")
    stub.Request(kept, timeout=15)
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=20)
    initial = next(events)
    assert initial.type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    assert initial.cross_connects["mon-kept"] == kept
    xcon = local_xcon("mon-1", a, b, src_ip="10.30.9.1/30", dst_ip="10.30.9.2/30")
    stub.Request(xcon, timeout=15)
    update = next(events)
    assert update.type == crossconnect_pb2.UPDATE and dict(update.cross_connects) == {"mon-1": xcon}
    stub.Close(xcon, timeout=15)
    delete = next(events)
    assert delete.type == crossconnect_pb2.DELETE and list(delete.cross_connects) == ["mon-1"]
    stub.Close(kept, timeout=15)
    assert next(events).type == crossconnect_pb2.DELETE
    events.cancel()


def test_forwarder_40_concurrent_requests(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    xcons = [numbered_xcon("conc", i, a, b, 40, ends=("c", "e")) for i in range(40)]
    stub = node.forwarder.stub()
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        replies = list(pool.map(lambda x: stub.Request(x, timeout=60), xcons))
    assert replies == xcons
    assert len(a.links()) == 40 and len(b.links()) == 40
    assert a.ping("10.40.0.2") and a.ping("10.40.39.2")
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        list(pool.map(lambda x: stub.Close(x, timeout=60), xcons))
    assert a.links() == [] and b.links() == []


def _bad(a: Pod, b: Pod) -> list[tuple[str, crossconnect_pb2.CrossConnect, grpc.StatusCode, str]]:
    def x(**kw: object) -> crossconnect_pb2.CrossConnect:
        return local_xcon("bad-1", a, b, **kw)  # type: ignore[arg-type]

    no_payload = x()
    no_payload.payload = ""
    no_service = x()
    no_service.destination.network_service = ""
    memif = x()
    memif.source.mechanism.type = "MEMIF"
    no_ns = x()
    no_ns.destination.mechanism.parameters["netnsInode"] = "4242424242"
    empty_id = x()
    empty_id.id = ""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        ("empty id", empty_id, invalid, "id: must not be empty"),
        ("empty payload", no_payload, invalid, "payload: must not be empty"),
        ("empty network_service", no_service, invalid, "network_service: must not be empty"),
        ("bad cidr", x(src_ip="10.1.1.500/24"), invalid, "not a valid addr/len"),
        ("long name", x(dst_name="a" * 16), invalid, "the limit is 15"),
        ("slash name", x(src_name="a/b"), invalid, "not a valid interface name"),
        ("unsupported mechanism", memif, invalid, "'MEMIF' is not supported"),
        ("unknown netns", no_ns, grpc.StatusCode.NOT_FOUND, "4242424242"),
    ]


def test_forwarder_rejects_bad_input_and_leaves_nothing(
    node: Node, two_pods: tuple[Pod, Pod]
) -> None:
    a, b = two_pods
    stub = node.forwarder.stub()
    for what, xcon, code, message in _bad(a, b):
        with pytest.raises(grpc.RpcError) as err:
            stub.Request(xcon, timeout=15)
        assert err.value.code() == code, what
        assert message in err.value.details(), what
        assert a.links() == [] and b.links() == [], what


def test_forwarder_foreign_interface_name_is_refused(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    a, b = two_pods
    b.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "other0")
    with pytest.raises(grpc.RpcError) as err:
        node.forwarder.stub().Request(local_xcon("clash-1", a, b), timeout=15)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert a.links() == [] and sorted(b.links()) == ["nsm0", "other0"]


def test_forwarder_survives_worker_sigkill(node: Node, two_pods: tuple[Pod, Pod]) -> None:
    import os
    import signal

    a, b = two_pods
    before = node.forwarder.worker_pids()
    workers = node.workers  # type: ignore[attr-defined]
    assert len(before) == workers
    names = set()
    for pid in before:  # named for top / ps -o comm (their command line is the zygote's)
        with open(f"/proc/{pid}/comm") as f:
            names.add(f.read().strip())
    assert names == {f"nsm-worker-{i}" for i in range(workers)}
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    xcon = local_xcon("kill-1", a, b)
    node.forwarder.stub().Request(xcon, timeout=30)
    assert a.ping("10.30.1.2")
    node.forwarder.stub().Close(xcon, timeout=15)
    wait_until(lambda: len(node.forwarder.worker_pids()) == workers, 15, "all workers again")
    assert not set(node.forwarder.worker_pids()) & set(before)


def test_forwarder_readiness_names_missing_step(node_factory: type) -> None:
    node: Node = node_factory(NSM_FORWARDER_HEALTH_PORT="0")
    node.forwarder.start()  # no registrar yet: it waits for the socket (registering counts)
    wait_until(lambda: "health probes on" in node.forwarder.log(), 20, "probes")
    port = node.forwarder.health_port()
    wait_until(lambda: "phase 7/7 register: done" in node.forwarder.log(), 20, "phase 5")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=5) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
    assert err.value.code == 404


def test_forwarder_registers_late_and_reregisters(node_factory: type) -> None:
    node: Node = node_factory()
    node.forwarder.start()  # registrar socket does not exist yet
    node.start_registrar()
    node.wait_registered()
    name = node.forwarder.name
    assert node.registrar.registered[name] == node.forwarder.socket
    # liveness stream breaks (nsmd hiccup) -> the forwarder registers again
    node.registrar.break_liveness()
    wait_until(lambda: node.registrar.history.count(("register", name)) >= 2, 10, "re-register")
    # nsmd restarts: a new registrar on the same socket
    node.stop_registrar()
    node.start_registrar()
    node.wait_registered()
    # the stand-in reads MonitorMechanisms and MonitorCrossConnects side by side: the initial
    # state may come after the mechanisms that wait_registered waits for
    wait_until(lambda: name in node.registrar.initial_state, 10, "the initial state")
    assert node.registrar.initial_state[name].type == crossconnect_pb2.INITIAL_STATE_TRANSFER


def test_forwarder_registers_again_when_nsmd_drops_it(node_factory: type) -> None:
    """nsmd drops a forwarder whose MonitorMechanisms stream failed but keeps the liveness
    stream going (spec §7.2): the forwarder notices the stream's end and registers again."""
    node: Node = node_factory().start()
    name = node.forwarder.name
    node.loop.loop.call_soon_threadsafe(node.registrar.drop_forwarder, name)
    wait_until(lambda: ("forwarder-down", name) in node.registrar.history, 10, "the drop")
    wait_until(lambda: node.registrar.history.count(("register", name)) == 2, 10, "again")
    node.wait_registered()
    assert "nsmd stopped watching this forwarder's mechanisms" in node.forwarder.log()


def test_forwarder_sigterm_unregisters_and_exits_0(node_factory: type) -> None:
    import os

    node: Node = node_factory().start()
    name = node.forwarder.name
    assert node.forwarder.terminate() == 0
    assert ("unregister", name) in node.registrar.history
    assert not os.path.exists(node.forwarder.socket)
    assert "shutdown 5/5" in node.forwarder.log()
