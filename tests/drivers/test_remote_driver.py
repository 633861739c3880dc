"""KernelDriver remote cross-connects (VXLAN, WireGuard) against real namespaces (root only).

Each "node" is a network namespace of an underlay pair (tests.helpers.make_underlay); its driver
runs in a thread that entered that namespace, as a worker process of a forwarder running there
would (the driver takes the calling thread's namespace as the node's).
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nsm_forwarder.drivers.base import tag
from nsm_forwarder.drivers.errors import (
    AlreadyExists,
    DriverError,
    ForwarderError,
    InvalidRequest,
)
from nsm_forwarder.drivers.kernel import driver as kdriver
from nsm_forwarder.drivers.kernel import netns, wireguard
from nsm_forwarder.drivers.kernel.driver import KernelDriver
from nsm_forwarder.drivers.kernel.egress import EgressNotFound
from nsm_forwarder.drivers.plan import plan_from_xcon
from tests.drivers.conftest import needs_root
from tests.helpers import Pod, Pods, Underlay, make_underlay, remote_pair, sh

pytestmark = [
    needs_root(),
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go"),
]


class Node:
    """A KernelDriver whose every call runs in one thread inside the node namespace."""

    def __init__(self, netns_name: str, ip: str) -> None:
        self.name, self.ip = netns_name, ip
        self.driver = KernelDriver()
        self.plans: list[dict[str, Any]] = []

        def enter() -> None:
            fd = os.open(f"/var/run/netns/{netns_name}", os.O_RDONLY)
            try:
                netns._setns(fd, netns.CLONE_NEWNET)
            finally:
                os.close(fd)

        self.thread = concurrent.futures.ThreadPoolExecutor(1, initializer=enter)

    def call(self, method: str, *args: Any) -> Any:
        if method == "apply":
            self.plans.append(args[0])
        return self.thread.submit(getattr(self.driver, method), *args).result(30)

    def init(self, src_ip: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "init", {"src_ip": src_ip or self.ip, "vxlan_port": 4789}
        )
        return result

    def devices(self) -> list[str]:
        """WireGuard device names of every wireguard plan this node was asked to apply."""
        inode = os.stat(f"/var/run/netns/{self.name}").st_ino
        return [
            wireguard.device_name(inode, tag(p["id"], p["side"]))
            for p in self.plans
            if p.get("kind") == "wireguard"
        ]

    def node_links(self) -> list[str]:
        out = sh("ip", "-n", self.name, "-o", "link", "show")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def close(self) -> None:
        for device in self.devices():
            self.thread.submit(wireguard.stop, device).result(10)
        self.thread.shutdown()


@pytest.fixture
def bed() -> Iterator[Callable[..., tuple[Underlay, Node, Node]]]:
    """Factory of underlays with an initialized driver per node; all removed at teardown."""
    made: list[tuple[Underlay, Node, Node]] = []

    def make(v6: bool = False) -> tuple[Underlay, Node, Node]:
        u = make_underlay(v6)
        a, b = Node(u.a, u.a_ip), Node(u.b, u.b_ip)
        made.append((u, a, b))
        a.init()
        b.init()
        return u, a, b

    try:
        yield make
    finally:
        for u, a, b in made:
            a.close()
            b.close()
            u.delete()


@pytest.fixture
def two_pods(pods: Pods) -> tuple[Pod, Pod]:
    return pods.make(), pods.make()


def no_daemons(*nodes: Node) -> bool:
    live = wireguard.running()
    return not [d for n in nodes for d in n.devices() if d in live]


def sockets_of(*nodes: Node) -> list[str]:
    """UAPI sockets or daemon logs left of these nodes' WireGuard devices."""
    paths = [
        f(d)
        for n in nodes
        for d in n.devices()
        for f in (wireguard.socket_path, wireguard.log_path)
    ]
    return [p for p in paths if os.path.exists(p)]


# --- init: egress detection ------------------------------------------------------------------


def test_init_finds_the_egress_interface(bed: Callable[..., tuple[Underlay, Node, Node]]) -> None:
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
    bed: Callable[..., tuple[Underlay, Node, Node]],
    two_pods: tuple[Pod, Pod],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    u, a, _ = bed()
    monkeypatch.setattr(wireguard, "BINARY", "nsm-no-such-wireguard-go")
    assert wireguard.unavailable() == "nsm-no-such-wireguard-go is not installed"
    assert a.init()["remote"] == ["VXLAN"]
    pair = remote_pair("nowg", *two_pods, u.a_ip, u.b_ip, "WIREGUARD")
    with pytest.raises(InvalidRequest, match="WIREGUARD is not available on this node"):
        a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    assert two_pods[0].links() == []


def test_init_finds_an_ipv6_egress(bed: Callable[..., tuple[Underlay, Node, Node]]) -> None:
    u, a, _ = bed(v6=True)
    egress = a.init(u.a_ip.upper())["egress"]
    assert egress["ifname"] == "ul0" and egress["ip"] == u.a_ip


# --- tunnels between two nodes ---------------------------------------------------------------


@pytest.mark.parametrize("mech", ["VXLAN", "WIREGUARD"])
def test_tunnel_over_ipv6_underlay_pings_and_goes_away(
    bed: Callable[..., tuple[Underlay, Node, Node]], two_pods: tuple[Pod, Pod], mech: str
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
        ("VXLAN", "_add_neighbor", lambda: {"ip_neighbors": [neighbor("10.60.1.2")]}, "neighbour"),
        ("WIREGUARD", "_add_route", lambda: {"dst_routes": [route()]}, "add route 10.77.0.0/16"),
    ],
)
def test_remote_failure_rolls_back_everything(
    bed: Callable[..., tuple[Underlay, Node, Node]],
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

    monkeypatch.setattr(kdriver, step, failing)
    pair = remote_pair(f"rb{mech[0]}", client, endpoint, u.a_ip, u.b_ip, mech, **context())
    with pytest.raises(DriverError, match=message):
        a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    assert client.links() == [] and a.node_links() == ["lo", "ul0"]
    assert no_daemons(a) and not sockets_of(a)


def test_wireguard_error_never_shows_a_private_key(
    bed: Callable[..., tuple[Underlay, Node, Node]],
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
    params = second.outgoing.destination.mechanism.parameters
    secrets = []
    for key in ("src_private_key", "dst_private_key"):
        raw = base64.b64decode(params[key])
        secrets += [params[key], raw.hex(), raw.hex().upper()]
    seen = " ".join([str(err.value), repr(err.value), str(err.value.to_wire()), caplog.text])
    assert "configure nsmwg" in caplog.text  # the failing step was logged ...
    assert not [s for s in secrets if s in seen]  # ... without any key
    assert [d for d in a.devices() if d in wireguard.running()] == a.devices()[:1]


def test_remove_cleans_an_interrupted_wireguard_apply(
    bed: Callable[..., tuple[Underlay, Node, Node]], two_pods: tuple[Pod, Pod]
) -> None:
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
    bed: Callable[..., tuple[Underlay, Node, Node]], two_pods: tuple[Pod, Pod], mech: str
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


def test_vxlan_vni_in_use_on_the_node(
    bed: Callable[..., tuple[Underlay, Node, Node]], pods: Pods
) -> None:
    u, a, _ = bed()
    client1, client2 = pods.make(), pods.make()
    first = remote_pair("vni1", client1, pods.make(), u.a_ip, u.b_ip, vni=7)
    second = remote_pair("vni2", client2, pods.make(), u.a_ip, u.b_ip, vni=7)
    a.call("apply", plan_from_xcon(first.outgoing, mtu=1))
    with pytest.raises(AlreadyExists, match="VNI 7 is already used by another VXLAN device"):
        a.call("apply", plan_from_xcon(second.outgoing, mtu=1))
    assert client1.links() == ["nsm0"] and client2.links() == []


def test_foreign_interface_in_the_pod_is_refused(
    bed: Callable[..., tuple[Underlay, Node, Node]], two_pods: tuple[Pod, Pod]
) -> None:
    u, a, _ = bed()
    client, endpoint = two_pods
    client.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "other0")
    pair = remote_pair("foreign", client, endpoint, u.a_ip, u.b_ip, "WIREGUARD")
    with pytest.raises(AlreadyExists, match="interface nsm0 already exists"):
        a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    assert sorted(client.links()) == ["nsm0", "other0"]
    assert no_daemons(a)


def test_sweep_of_an_orphan_tunnel_stops_its_daemon(
    bed: Callable[..., tuple[Underlay, Node, Node]], two_pods: tuple[Pod, Pod]
) -> None:
    u, a, _ = bed()
    client, _endpoint = two_pods
    pair = remote_pair("orphan", client, _endpoint, u.a_ip, u.b_ip, "WIREGUARD")
    a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    ours = [o for o in a.call("observe") if o["id"] == pair.outgoing.id]
    assert [(o["side"], o["inode"], o["name"]) for o in ours] == [("src", client.inode, "nsm0")]
    assert a.call("sweep", ours) == 1
    assert client.links() == [] and no_daemons(a) and not sockets_of(a)


def test_unknown_remote_kind_is_refused(bed: Callable[..., tuple[Underlay, Node, Node]]) -> None:
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
