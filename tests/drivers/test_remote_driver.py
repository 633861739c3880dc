"""KernelDriver remote cross-connects (VXLAN, WireGuard) against real namespaces (root only).

Each "node" (tests/drivers/nodes.py) is a namespace of an underlay pair whose driver runs in a
thread inside it. WireGuard here is userspace wireguard-go (this machine's kernel has none; the
kernel module is tested in a VM: tests/drivers/test_kernel_wireguard.py, tests/vm).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from nsm_forwarder.drivers.errors import (
    AlreadyExists,
    DriverError,
    ForwarderError,
    InvalidRequest,
)
from nsm_forwarder.drivers.kernel import wgkernel, wgselect, wireguard
from nsm_forwarder.drivers.linux import addressing
from nsm_forwarder.drivers.linux.egress import EgressNotFound
from nsm_forwarder.drivers.plan import plan_from_xcon
from tests.drivers.conftest import needs_root
from tests.drivers.nodes import Bed, no_daemons, sockets_of
from tests.helpers import Pod, Pods, private_key_forms, remote_pair

pytestmark = [
    needs_root(),
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go"),
]


# --- init: egress detection ------------------------------------------------------------------


def test_init_finds_the_egress_interface(bed: Bed) -> None:
    u, a, _ = bed()
    caps = a.init()
    assert caps["local"] == ["KERNEL_INTERFACE"]
    assert caps["remote"] == ["VXLAN", "WIREGUARD"]
    assert caps["egress"] == {
        "ifname": "ul0",
        "ifindex": caps["egress"]["ifindex"],
        "mtu": 1500,
        "ip": u.a_ip,
        "loopback": False,
    }
    lo = a.init("127.0.0.1")["egress"]  # what the single-node tests run with
    assert lo["ifname"] == "lo" and lo["loopback"] is True and lo["mtu"] == 65536
    with pytest.raises(EgressNotFound) as err:
        a.init("10.255.255.1")
    assert str(err.value) == "no interface carries NSM_FORWARDER_SRC_IP 10.255.255.1"
    assert err.value.to_wire()["code"] == "FAILED_PRECONDITION"
    with pytest.raises(EgressNotFound, match="no interface carries NSM_FORWARDER_SRC_IP " + u.b_ip):
        a.init(u.b_ip)  # the peer's address is not this node's


def test_init_offers_wireguard_only_where_wireguard_go_runs(
    bed: Bed,
    two_pods: tuple[Pod, Pod],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    u, a, _ = bed()
    monkeypatch.setattr(wireguard, "BINARY", "nsm-no-such-wireguard-go")
    assert wireguard.unavailable() == "nsm-no-such-wireguard-go is not installed"
    if wgkernel.unavailable() is None:
        pytest.skip("this kernel has WireGuard: auto would use it")
    assert a.init(backend="auto")["remote"] == ["VXLAN"]
    pair = remote_pair("nowg", *two_pods, u.a_ip, u.b_ip, "WIREGUARD")
    with pytest.raises(InvalidRequest, match="WIREGUARD is not available on this node"):
        a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    assert two_pods[0].links() == []


@pytest.mark.skipif(wgkernel.unavailable() is None, reason="this kernel has WireGuard")
def test_wireguard_backend_choice_on_a_kernel_without_wireguard(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto falls back to wireguard-go and says why; an insisted-on backend that cannot work
    stops init with one clear line. (Where the kernel has it: tests/drivers/
    test_kernel_wireguard.py, run in the VM of tests/vm.)"""
    assert wgkernel.unavailable() == "the kernel has no WireGuard module"
    assert wgselect.choose("auto") == wgselect.Choice(
        "userspace", "userspace wireguard-go (the kernel has no WireGuard module)"
    )
    assert wgselect.choose("userspace") == wgselect.Choice("userspace", "userspace wireguard-go")
    _, a, _ = bed()
    assert a.init(backend="auto")["wireguard"] == "userspace"
    assert a.driver.underlay.wireguard == "userspace"
    with pytest.raises(DriverError) as err:
        a.init(backend="kernel")
    assert str(err.value) == "wireguard_backend is kernel, but the kernel has no WireGuard module"
    with pytest.raises(DriverError, match="must be one of auto, kernel, userspace, not 'fast'"):
        a.init(backend="fast")
    monkeypatch.setattr(wireguard, "BINARY", "nsm-no-such-wireguard-go")
    with pytest.raises(
        DriverError, match="wireguard_backend is userspace, but nsm-no-such-wireguard-go is not"
    ):
        a.init(backend="userspace")
    caps = a.init(backend="auto")
    assert caps["wireguard"] is None and caps["remote"] == ["VXLAN"]


def test_init_finds_an_ipv6_egress(bed: Bed) -> None:
    u, a, _ = bed(v6=True)
    egress = a.init(u.a_ip.upper())["egress"]
    assert egress["ifname"] == "ul0" and egress["ip"] == u.a_ip


# --- tunnels between two nodes ---------------------------------------------------------------


@pytest.mark.parametrize("mech", ["VXLAN", "WIREGUARD"])
def test_tunnel_over_ipv6_underlay_pings_and_goes_away(
    bed: Bed, two_pods: tuple[Pod, Pod], mech: str
) -> None:
    u, a, b = bed(v6=True)
    client, endpoint = two_pods
    pair = remote_pair("v6", client, endpoint, u.a_ip, u.b_ip, mech)
    out = a.call("apply", plan_from_xcon(pair.outgoing, mtu=16000, egress_mtu=1500))
    inc = b.call("apply", plan_from_xcon(pair.incoming, mtu=16000, egress_mtu=1500))
    assert client.links() == ["nsm0"] and endpoint.links() == ["nsm0"]
    assert f"mtu {1430 if mech == 'VXLAN' else 1420} " in client.ip("link", "show", "nsm0")
    assert client.ping("10.60.1.2", 3) and endpoint.ping("10.60.1.1")
    assert a.node_links() == ["lo", "ul0"]  # the tunnel device lives in the pod only
    a.call("remove", out)
    b.call("remove", inc)
    assert client.links() == [] and endpoint.links() == []
    assert no_daemons(a, b) and not sockets_of(a, b)


@pytest.mark.parametrize(
    ("mech", "step", "context", "message"),
    [
        ("VXLAN", "add_neighbor", lambda: {"ip_neighbors": [neighbor("10.60.1.2")]}, "neighbour"),
        ("WIREGUARD", "add_route", lambda: {"dst_routes": [route()]}, "add route 10.77.0.0/16"),
    ],
)
def test_remote_failure_rolls_back_everything(
    bed: Bed,
    two_pods: tuple[Pod, Pod],
    monkeypatch: pytest.MonkeyPatch,
    mech: str,
    step: str,
    context: Callable[[], dict[str, Any]],
    message: str,
) -> None:
    """A failure at the last step of a tunnel's set-up leaves nothing, in the pod or the node."""
    u, a, _ = bed()
    client, endpoint = two_pods

    def failing(*args: Any) -> Callable[[], None]:
        raise OSError(5, "injected")

    monkeypatch.setattr(addressing, step, failing)
    pair = remote_pair(f"rb{mech[0]}", client, endpoint, u.a_ip, u.b_ip, mech, **context())
    with pytest.raises(DriverError, match=message):
        a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    assert client.links() == [] and a.node_links() == ["lo", "ul0"]
    assert no_daemons(a) and not sockets_of(a)


def test_wireguard_error_never_shows_a_private_key(
    bed: Bed,
    pods: Pods,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two tunnels on one node asking for the same listen port: the second fails in the UAPI
    (EADDRINUSE) and is rolled back; no key appears in the error or in any log record."""
    caplog.set_level(logging.DEBUG)
    u, a, _ = bed()
    first = remote_pair("k1", pods.make(), pods.make(), u.a_ip, u.b_ip, "WIREGUARD")
    second = remote_pair("k2", pods.make(), pods.make(), u.a_ip, u.b_ip, "WIREGUARD")
    a.call("apply", plan_from_xcon(first.outgoing, mtu=1))
    plan = plan_from_xcon(second.outgoing, mtu=1)
    with pytest.raises(AlreadyExists) as err:
        a.call("apply", plan)
    assert "listen port 51820 is already in use" in str(err.value)
    secrets = private_key_forms(second.outgoing.destination.mechanism.parameters)
    seen = " ".join([str(err.value), repr(err.value), str(err.value.to_wire()), caplog.text])
    assert "configure nsmwg" in caplog.text  # the failing step was logged ...
    assert not [s for s in secrets if s in seen]  # ... without any key
    assert [d for d in a.devices() if d in wireguard.running()] == a.devices()[:1]


def test_remove_cleans_an_interrupted_wireguard_apply(bed: Bed, two_pods: tuple[Pod, Pod]) -> None:
    """A worker killed after starting wireguard-go (its TUN still in the node namespace): the
    plan is all the sweep gets, and it is enough."""
    u, a, _ = bed()
    pair = remote_pair("int", *two_pods, u.a_ip, u.b_ip, "WIREGUARD")
    plan = plan_from_xcon(pair.outgoing, mtu=1)
    a.plans.append(plan)
    (device,) = a.devices()
    a.thread.submit(wireguard.start, device).result(10)
    assert device in a.node_links() and wireguard.pids(device)
    a.call("remove", plan)
    assert a.node_links() == ["lo", "ul0"]
    assert no_daemons(a) and not sockets_of(a)
    assert not os.path.exists(wireguard.log_path(device))


@pytest.mark.parametrize("mech", ["VXLAN", "WIREGUARD"])
def test_apply_over_leftovers_of_the_same_id(
    bed: Bed, two_pods: tuple[Pod, Pod], mech: str
) -> None:
    """The applied record was lost (a crash): applying the plan again replaces what is there."""
    u, a, b = bed()
    client, endpoint = two_pods
    pair = remote_pair("again", client, endpoint, u.a_ip, u.b_ip, mech)
    plan = plan_from_xcon(pair.outgoing, mtu=1)
    a.call("apply", plan)
    applied = a.call("apply", plan)
    b.call("apply", plan_from_xcon(pair.incoming, mtu=1))
    assert client.links() == ["nsm0"]
    if mech == "WIREGUARD":
        assert len(wireguard.pids(applied["device"])) == 1
    assert client.ping("10.60.1.2", 3)
    a.call("remove", applied)
    assert client.links() == [] and no_daemons(a)


def test_vxlan_vni_in_use_on_the_node(bed: Bed, pods: Pods) -> None:
    u, a, _ = bed()
    client1, client2 = pods.make(), pods.make()
    first = remote_pair("vni1", client1, pods.make(), u.a_ip, u.b_ip, vni=7)
    second = remote_pair("vni2", client2, pods.make(), u.a_ip, u.b_ip, vni=7)
    a.call("apply", plan_from_xcon(first.outgoing, mtu=1))
    with pytest.raises(AlreadyExists, match="VNI 7 is already used by another VXLAN device"):
        a.call("apply", plan_from_xcon(second.outgoing, mtu=1))
    assert client1.links() == ["nsm0"] and client2.links() == []


def test_foreign_interface_in_the_pod_is_refused(bed: Bed, two_pods: tuple[Pod, Pod]) -> None:
    u, a, _ = bed()
    client, endpoint = two_pods
    client.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "other0")
    pair = remote_pair("foreign", client, endpoint, u.a_ip, u.b_ip, "WIREGUARD")
    with pytest.raises(AlreadyExists, match="interface nsm0 already exists"):
        a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    assert sorted(client.links()) == ["nsm0", "other0"]
    assert no_daemons(a)


def test_sweep_of_an_orphan_tunnel_stops_its_daemon(bed: Bed, two_pods: tuple[Pod, Pod]) -> None:
    u, a, _ = bed()
    client, _endpoint = two_pods
    pair = remote_pair("orphan", client, _endpoint, u.a_ip, u.b_ip, "WIREGUARD")
    a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    ours = [o for o in a.call("observe") if o["id"] == pair.outgoing.id]
    assert [(o["side"], o["inode"], o["name"]) for o in ours] == [("src", client.inode, "nsm0")]
    assert a.call("sweep", ours) == 1
    assert client.links() == [] and no_daemons(a) and not sockets_of(a)


def test_unknown_remote_kind_is_refused(bed: Bed) -> None:
    _, a, _ = bed()
    with pytest.raises(ForwarderError, match="cannot apply a plan of kind 'gre'"):
        a.call("apply", {"id": "x", "kind": "gre"})


# --- helpers ---------------------------------------------------------------------------------


def neighbor(ip: str) -> Any:
    from nsm_forwarder.proto import connectioncontext_pb2

    return connectioncontext_pb2.IpNeighbor(ip=ip, hardware_address="02:00:00:00:00:09")


def route(prefix: str = "10.77.0.0/16") -> Any:
    from nsm_forwarder.proto import connectioncontext_pb2

    return connectioncontext_pb2.Route(prefix=prefix)
