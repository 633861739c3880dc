"""Remote cross-connects end to end: a client pod on node A, an endpoint pod on node B, a forwarder
per node (each inside its node namespace), nsmd's two cross-connects sent over the gRPC API, and
pings through the VXLAN or WireGuard tunnel between the nodes."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable

import grpc
import pytest

from nsm_forwarder.drivers.kernel import wgkernel, wireguard
from nsm_forwarder.proto import crossconnect_pb2
from tests.conftest import Node, needs_root
from tests.helpers import (
    BackgroundLoop,
    Pod,
    local_xcon,
    make_underlay,
    private_key_forms,
    remote_pair,
    wait_until,
)
from tests.remote.conftest import TwoNodes

pytestmark = needs_root
needs_wireguard_go = pytest.mark.skipif(
    shutil.which("wireguard-go") is None, reason="needs wireguard-go (apt: wireguard-go)"
)
NO_KERNEL_WIREGUARD = wgkernel.unavailable() if os.geteuid() == 0 else "needs root"
needs_kernel_wireguard = pytest.mark.skipif(
    NO_KERNEL_WIREGUARD is not None,
    reason=f"{NO_KERNEL_WIREGUARD}; tests/vm/test_vm.py runs this in a VM whose kernel has it",
)
NODE_LINKS = ["lo", "ul0"]


def request(node: Node, xcon: crossconnect_pb2.CrossConnect) -> crossconnect_pb2.CrossConnect:
    reply: crossconnect_pb2.CrossConnect = node.forwarder.stub().Request(xcon, timeout=15)
    return reply


def close(node: Node, xcon: crossconnect_pb2.CrossConnect) -> None:
    node.forwarder.stub().Close(xcon, timeout=15)


def assert_nothing_left(bed: TwoNodes, *pods: Pod) -> None:
    for pod in pods:
        assert pod.links() == [], pod.name
    assert bed.node_links("a") == NODE_LINKS and bed.node_links("b") == NODE_LINKS
    assert bed.daemons() == {}


def advertised(node: Node) -> list[tuple[str, dict[str, str]]]:
    assert node.registrar is not None
    update = node.registrar.mechanisms[node.forwarder.name]
    assert [m.type for m in update.local_mechanisms] == ["KERNEL_INTERFACE"]
    return [(m.type, dict(m.parameters)) for m in update.remote_mechanisms]


def test_remote_vxlan_pings_and_close_leaves_nothing(two_nodes: TwoNodes) -> None:
    bed = two_nodes
    # MonitorMechanisms, as the registrar stand-in (like nsmd) read it from each forwarder
    for node, ip in ((bed.a, bed.a_ip), (bed.b, bed.b_ip)):
        remote = ["VXLAN", "WIREGUARD"] if shutil.which("wireguard-go") else ["VXLAN"]
        assert advertised(node) == [(m, {"src_ip": ip}) for m in remote]
    client, endpoint = bed.pod(), bed.pod()
    pair = remote_pair("vx", client, endpoint, bed.a_ip, bed.b_ip, "VXLAN", vni=5)
    assert request(bed.a, pair.outgoing) == pair.outgoing
    assert request(bed.b, pair.incoming) == pair.incoming
    assert client.links() == ["nsm0"] and endpoint.links() == ["nsm0"]
    details = client.ip("-d", "link", "show", "nsm0")
    assert f"vxlan id 5 remote {bed.b_ip} local {bed.a_ip}" in details
    assert "dstport 4789 nolearning" in details and "mtu 1450 " in details
    assert f"alias nsm:{bed.a.forwarder.name}/vx-out:src" in details
    assert "10.60.1.1/30" in client.ip("addr", "show", "nsm0")
    assert "10.60.1.2/30" in endpoint.ip("addr", "show", "nsm0")
    assert bed.node_links("a") == NODE_LINKS  # the device is in the pod, its socket here
    assert client.ping_over_tunnel("10.60.1.2") and endpoint.ping("10.60.1.1")
    close(bed.a, pair.outgoing)
    close(bed.b, pair.incoming)
    assert_nothing_left(bed, client, endpoint)


@needs_wireguard_go
def test_remote_wireguard_pings_close_stops_daemons_and_keys_stay_secret(
    two_nodes: TwoNodes,
) -> None:
    bed = two_nodes
    client, endpoint = bed.pod(), bed.pod()
    pair = remote_pair(
        "wg",
        client,
        endpoint,
        bed.a_ip,
        bed.b_ip,
        "WIREGUARD",
        ports=(51830, 51831),
        dst_routes=[route("10.77.0.0/16")],
        src_routes=[route("10.88.0.0/16")],
    )
    request(bed.a, pair.outgoing)
    request(bed.b, pair.incoming)
    assert client.links() == ["nsm0"] and endpoint.links() == ["nsm0"]
    assert "mtu 1440 " in client.ip("link", "show", "nsm0")
    assert "10.77.0.0/16 via 10.60.1.2 dev nsm0" in client.ip("route", "show")
    assert "10.88.0.0/16 via 10.60.1.1 dev nsm0" in endpoint.ip("route", "show")
    assert client.ping_over_tunnel("10.60.1.2") and endpoint.ping("10.60.1.1")
    daemons = bed.daemons()
    assert len(daemons) == 2  # one per node, both in the node namespaces
    assert all(os.path.exists(wireguard.socket_path(d)) for d in daemons.values())

    # A second tunnel on node A asking for the same listen port: refused, rolled back, and no
    # key in the error or the (DEBUG) log of either forwarder.
    other = remote_pair(
        "wg2", bed.pod(), bed.pod(), bed.a_ip, bed.b_ip, "WIREGUARD", ports=(51830, 51832)
    )
    with pytest.raises(grpc.RpcError) as err:
        request(bed.a, other.outgoing)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "listen port 51830 is already in use" in (err.value.details() or "")
    assert bed.daemons() == daemons
    text = bed.a.forwarder.log() + bed.b.forwarder.log() + (err.value.details() or "")
    assert "DEBUG" in text and "configure nsmwg" in text
    for xcon in (pair.outgoing, other.outgoing):
        for form in private_key_forms(xcon.destination.mechanism.parameters):
            assert form not in text, f"a private key of {xcon.id} in a log"

    close(bed.a, pair.outgoing)
    close(bed.b, pair.incoming)
    close(bed.a, other.outgoing)  # never applied: Close still succeeds
    assert_nothing_left(bed, client, endpoint)
    for device in daemons.values():
        assert not os.path.exists(wireguard.socket_path(device))
        assert not os.path.exists(wireguard.log_path(device))


@needs_wireguard_go
def test_remote_update_to_a_new_vni(two_nodes: TwoNodes) -> None:
    bed = two_nodes
    client, endpoint = bed.pod(), bed.pod()
    first = remote_pair("upd", client, endpoint, bed.a_ip, bed.b_ip, vni=3)
    request(bed.a, first.outgoing)
    request(bed.b, first.incoming)
    assert client.ping_over_tunnel("10.60.1.2")
    second = remote_pair("upd", client, endpoint, bed.a_ip, bed.b_ip, vni=5)
    assert request(bed.a, second.outgoing) == second.outgoing  # same ids: an update
    assert request(bed.b, second.incoming) == second.incoming
    assert "vxlan id 5 " in client.ip("-d", "link", "show", "nsm0")
    assert "vxlan id 5 " in endpoint.ip("-d", "link", "show", "nsm0")
    assert client.links() == ["nsm0"] and endpoint.links() == ["nsm0"]
    assert client.ping_over_tunnel("10.60.1.2")
    # and over to WireGuard, same ids, same pods
    third = remote_pair("upd", client, endpoint, bed.a_ip, bed.b_ip, "WIREGUARD")
    request(bed.a, third.outgoing)
    request(bed.b, third.incoming)
    assert "vxlan" not in client.ip("-d", "link", "show", "nsm0")
    assert client.ping_over_tunnel("10.60.1.2") and len(bed.daemons()) == 2
    # and to new WireGuard keys and ports: each node's daemon is replaced, none is left over
    before = set(bed.daemons())
    fourth = remote_pair(
        "upd", client, endpoint, bed.a_ip, bed.b_ip, "WIREGUARD", ports=(51900, 51901)
    )
    request(bed.a, fourth.outgoing)
    request(bed.b, fourth.incoming)
    assert client.ping_over_tunnel("10.60.1.2")
    assert len(bed.daemons()) == 2 and not set(bed.daemons()) & before
    close(bed.a, fourth.outgoing)
    close(bed.b, fourth.incoming)
    assert_nothing_left(bed, client, endpoint)


@needs_wireguard_go
def test_remote_and_local_cross_connects_at_once(two_nodes: TwoNodes) -> None:
    bed = two_nodes
    client, endpoint = bed.pod(), bed.pod()
    left, right = bed.pod(), bed.pod()  # two more pods on node A, joined locally
    pair = remote_pair("mix", client, endpoint, bed.a_ip, bed.b_ip, "WIREGUARD")
    local = local_xcon("mix-local", left, right, src_ip="10.61.1.1/30", dst_ip="10.61.1.2/30")
    request(bed.a, pair.outgoing)
    request(bed.a, local)
    request(bed.b, pair.incoming)
    assert client.ping_over_tunnel("10.60.1.2") and left.ping("10.61.1.2")
    close(bed.a, local)
    assert client.ping("10.60.1.2")  # the remote one is untouched
    close(bed.a, pair.outgoing)
    close(bed.b, pair.incoming)
    assert_nothing_left(bed, client, endpoint, left, right)


@needs_wireguard_go
def test_remote_tunnel_survives_a_worker_kill(two_nodes: TwoNodes) -> None:
    """wireguard-go belongs to no worker: the tunnel outlives them, and a replacement worker
    finds the daemon again on Close."""
    bed = two_nodes
    client, endpoint = bed.pod(), bed.pod()
    pair = remote_pair("wk", client, endpoint, bed.a_ip, bed.b_ip, "WIREGUARD")
    request(bed.a, pair.outgoing)
    request(bed.b, pair.incoming)
    daemons = bed.daemons()
    old = bed.a.forwarder.worker_pids()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: len(set(bed.a.forwarder.worker_pids()) - set(old)) == len(old),
        15,
        "replacement workers",
    )
    assert bed.daemons() == daemons
    assert client.ping_over_tunnel("10.60.1.2")
    close(bed.a, pair.outgoing)
    close(bed.b, pair.incoming)
    assert_nothing_left(bed, client, endpoint)


@needs_wireguard_go
def test_remote_tunnel_survives_a_forwarder_restart(two_nodes: TwoNodes) -> None:
    """SIGKILL the client node's forwarder: the tunnel keeps carrying traffic, the restarted
    forwarder (same name and state) keeps it, and its Close removes it, daemon included."""
    bed = two_nodes
    client, endpoint = bed.pod(), bed.pod()
    pair = remote_pair("fr", client, endpoint, bed.a_ip, bed.b_ip, "WIREGUARD")
    request(bed.a, pair.outgoing)
    request(bed.b, pair.incoming)
    daemons = bed.daemons()
    bed.a.forwarder.kill()
    assert client.ping_over_tunnel("10.60.1.2") and bed.daemons() == daemons
    bed.a.forwarder.start()
    bed.a.wait_registered()
    assert bed.daemons() == daemons and client.links() == ["nsm0"]
    assert client.ping_over_tunnel("10.60.1.2")
    close(bed.a, pair.outgoing)
    close(bed.b, pair.incoming)
    assert_nothing_left(bed, client, endpoint)


def test_remote_bad_parameters_are_rejected_and_leave_nothing(two_nodes: TwoNodes) -> None:
    bed = two_nodes
    client, endpoint = bed.pod(), bed.pod()

    def pair(mech: str = "VXLAN", **params: str) -> crossconnect_pb2.CrossConnect:
        xcon = remote_pair("bad", client, endpoint, bed.a_ip, bed.b_ip, mech).outgoing
        xcon.destination.mechanism.parameters.update(params)
        return xcon

    both_remote = pair()
    both_remote.source.path.CopyFrom(both_remote.destination.path)
    cases = [
        (pair(src_ip="10.0.0.256"), "src_ip: '10.0.0.256' is not an IP address"),
        (pair(dst_ip="fd00::2"), "not of the same IP family"),
        (pair(vni="0"), "must be a decimal VNI in 1..16777215, got '0'"),
        (pair(vni="16777216"), "got '16777216'"),
        (pair("WIREGUARD", src_private_key="c2hvcnQ="), "got 5 bytes"),
        (pair("WIREGUARD", dst_public_key="%%%"), "is not valid base64"),
        (pair("WIREGUARD", src_port="0"), "src_port: must be a decimal UDP port"),
        (pair("WIREGUARD", dst_port="65536"), "got '65536'"),
        (pair("MEMIF"), "'MEMIF' is not supported for the remote end"),
        (both_remote, "both source and destination are remote"),
    ]
    stub = bed.a.forwarder.stub()
    for xcon, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Request(xcon, timeout=15)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in (err.value.details() or ""), err.value.details()
    assert_nothing_left(bed, client, endpoint)


@pytest.mark.parametrize(
    ("src_ip", "backend", "error"),
    [
        ("10.255.255.1", "auto", r"no interface carries NSM_FORWARDER_SRC_IP 10\.255\.255\.1$"),
        (
            None,
            "kernel",
            r"the kernel driver cannot work here: "
            r"wireguard_backend is kernel, but the kernel has no WireGuard module$",
        ),
    ],
    ids=["src_ip_nowhere", "no_kernel_wireguard"],
)
def test_startup_refused_with_one_clear_line(
    bg_loop: BackgroundLoop, src_ip: str | None, backend: str, error: str
) -> None:
    if backend == "kernel" and wgkernel.unavailable() is None:
        pytest.skip("this kernel has WireGuard")
    underlay = make_underlay()
    node = Node(
        bg_loop,
        netns=underlay.a,
        NSM_FORWARDER_SRC_IP=src_ip or underlay.a_ip,
        NSM_FORWARDER_WIREGUARD_BACKEND=backend,
    )
    try:
        with pytest.raises(AssertionError, match="forwarder exited at start"):
            node.forwarder.start()
        assert node.forwarder.proc is not None and node.forwarder.proc.returncode != 0
        errors = [line for line in node.forwarder.log().splitlines() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert re.search(error, errors[0]), errors[0]
    finally:
        node.close()
        underlay.delete()


@needs_kernel_wireguard
def test_remote_wireguard_through_the_kernel_module(
    two_nodes_factory: Callable[..., TwoNodes],
) -> None:
    """Forwarders left to choose (``auto``) take the kernel module: WIREGUARD is offered, the
    tunnel is a kernel device in each pod, pings pass, and Close leaves nothing, with no
    wireguard-go anywhere. (Runs in the VM of tests/vm; skips on kernels without WireGuard.)"""
    bed = two_nodes_factory(NSM_FORWARDER_WIREGUARD_BACKEND="auto")
    for node, ip in ((bed.a, bed.a_ip), (bed.b, bed.b_ip)):
        assert advertised(node) == [(m, {"src_ip": ip}) for m in ("VXLAN", "WIREGUARD")]
        assert "remote VXLAN, WIREGUARD (WireGuard: kernel)" in node.forwarder.log()
    client, endpoint = bed.pod(), bed.pod()
    pair = remote_pair("kwg", client, endpoint, bed.a_ip, bed.b_ip, "WIREGUARD")
    assert request(bed.a, pair.outgoing) == pair.outgoing
    assert request(bed.b, pair.incoming) == pair.incoming
    for pod in (client, endpoint):
        assert pod.links() == ["nsm0"] and " wireguard " in pod.ip("-d", "link", "show", "nsm0")
    assert client.ping_over_tunnel("10.60.1.2") and endpoint.ping("10.60.1.1")
    assert bed.daemons() == {}
    close(bed.a, pair.outgoing)
    close(bed.b, pair.incoming)
    assert_nothing_left(bed, client, endpoint)


def route(prefix: str) -> object:
    from nsm_forwarder.proto import connectioncontext_pb2

    return connectioncontext_pb2.Route(prefix=prefix)
