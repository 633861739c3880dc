"""The VPP driver against a VPP (the protocol-level one, or a real one: see conftest.py): the
right VPP and Linux objects after apply, none after remove, nothing left by a failure at any
step or a dropped connection, observe/sweep from VPP's own tables, a VPP restart, counters."""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from nsm_forwarder.drivers import base
from nsm_forwarder.drivers.errors import ForwarderError, InvalidRequest
from nsm_forwarder.drivers.plan import Offer, plan_from_xcon
from nsm_forwarder.drivers.vpp import driver as vdriver
from nsm_forwarder.drivers.vpp.api import af_packet_args
from nsm_forwarder.drivers.vpp.ends import host_name
from tests.helpers import Pod, Pods, local_xcon, netns_executor, remote_pair, sh
from tests.vpp.conftest import REAL, VPP_OFFER, VppBed, fake_only
from tests.vpp.xcons import memif_xcon

pytestmark = pytest.mark.timeout(120)
SIOCETHTOOL, ETHTOOL_GTXCSUM, ETHTOOL_GRXCSUM = 0x8946, 0x16, 0x14


@pytest.fixture
def base_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="nvb", dir="/tmp")
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def offer(base_dir: str) -> Offer:
    return Offer(VPP_OFFER.driver, VPP_OFFER.local, VPP_OFFER.remote, base_dir)


def tags(bed: VppBed) -> dict[str, Any]:
    return {str(d.tag): d for d in bed.vpp.ours()}


def assert_clean(bed: VppBed, *pods: Pod) -> None:
    """Nothing of ours in VPP (the uplink aside), in the node namespace or in the pods."""
    assert tags(bed) == {}
    assert [n for n in bed.node_links() if n.startswith("nsv")] == []
    for pod in pods:
        assert pod.links() == []
    mine = {i: f for i, f in bed.vpp.memif_sockets().items() if i != 0}
    assert mine == {}


def test_kernel_to_kernel(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """Two veth + af_packet ends joined by an l2 xconnect both ways; the pods get their
    addresses; remove leaves nothing."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(local_xcon("k1", a, b), mtu=1500, offer=offer(base_dir))
    applied = drv.call("apply", plan)
    found = tags(vpp_bed)
    src, dst = base.tag("k1", "src.afp"), base.tag("k1", "dst.afp")
    assert set(found) == {src, dst}
    assert str(found[src].interface_name) == f"host-{host_name('k1', 'src')}"
    assert all(int(d.flags) & 1 for d in found.values())  # admin up
    xc = vpp_bed.vpp.xconnects()
    i, j = int(found[src].sw_if_index), int(found[dst].sw_if_index)
    assert xc[i] == j and xc[j] == i
    assert [e["role"] for e in applied["ends"]] == ["afp", "afp"]
    assert "10.30.1.1/30" in a.ip("-o", "addr", "show", "dev", "nsm0")
    assert "10.30.1.2/30" in b.ip("-o", "addr", "show", "dev", "nsm0")
    if REAL:
        assert a.ping("10.30.1.2", count=3)
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)
    drv.call("remove", applied)  # idempotent


def test_memif_to_memif(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """Master memif on the client's socket (its directory made by the forwarder), slave on the
    endpoint's; xconnected; remove unregisters both sockets."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    xcon = memif_xcon("m1", a, b, "MEMIF", "MEMIF")
    plan = plan_from_xcon(xcon, mtu=1500, offer=offer(base_dir))
    os.makedirs(os.path.join(base_dir, "nse-ws", "nse0"))
    applied = drv.call("apply", plan)
    found = tags(vpp_bed)
    assert set(found) == {base.tag("m1", "src.memif"), base.tag("m1", "dst.memif")}
    sockets = set(vpp_bed.vpp.memif_sockets().values())
    assert {plan["src"]["socket"], plan["dst"]["socket"]} <= sockets
    assert os.path.isdir(os.path.dirname(plan["src"]["socket"]))
    with vpp_bed.vpp.client() as c:
        roles = {int(m.sw_if_index): int(m.role) for m in c.api.memif_dump()}
    assert roles[int(found[base.tag("m1", "src.memif")].sw_if_index)] == 0  # master
    assert roles[int(found[base.tag("m1", "dst.memif")].sw_if_index)] == 1  # slave
    master = plan["src"]["socket"]
    assert stat.S_ISSOCK(os.lstat(master).st_mode)  # VPP listens there
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)
    assert not os.path.exists(master)  # VPP leaves the file behind; the driver does not


def test_kernel_to_memif(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(
        memif_xcon("km", a, b, "KERNEL_INTERFACE", "MEMIF"), mtu=1500, offer=offer(base_dir)
    )
    os.makedirs(os.path.join(base_dir, "nse-ws", "nse0"))
    applied = drv.call("apply", plan)
    assert set(tags(vpp_bed)) == {base.tag("km", "src.afp"), base.tag("km", "dst.memif")}
    assert a.links() == ["nsm0"] and b.links() == []
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)


def test_kernel_to_vxlan(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """The client's node: af_packet end + VXLAN tunnel (src = this node, dst = the other, the
    mechanism's VNI, port 4789) + xconnect; the uplink (af_packet on the egress interface with
    NSM_FORWARDER_SRC_IP) stays when the cross-connect goes."""
    drv = vpp_bed.driver()
    u = vpp_bed.underlay
    client, endpoint = pods.make(), pods.make()
    pair = remote_pair("vx", client, endpoint, u.a_ip, u.b_ip, "VXLAN", vni=4321)
    plan = plan_from_xcon(pair.outgoing, mtu=1500, offer=offer(base_dir))
    applied = drv.call("apply", plan)
    found = tags(vpp_bed)
    assert set(found) == {base.tag("vx-out", "src.afp"), base.tag("vx-out", "dst.vxlan")}
    with vpp_bed.vpp.client() as c:
        tunnels = list(c.api.vxlan_tunnel_v2_dump(sw_if_index=0xFFFFFFFF))
    assert [
        (str(t.src_address), str(t.dst_address), int(t.vni), int(t.dst_port)) for t in tunnels
    ] == [(u.a_ip, u.b_ip, 4321, 4789)]
    uplink = [d for d in vpp_bed.vpp.interfaces() if str(d.interface_name) == "host-ul0"]
    assert len(uplink) == 1
    drv.call("remove", applied)
    assert_clean(vpp_bed, client)
    assert [d for d in vpp_bed.vpp.interfaces() if str(d.interface_name) == "host-ul0"]
    with vpp_bed.vpp.client() as c:
        assert list(c.api.vxlan_tunnel_v2_dump(sw_if_index=0xFFFFFFFF)) == []


def test_endpoint_side_vxlan_swaps_the_addresses(
    vpp_bed: VppBed, pods: Pods, base_dir: str
) -> None:
    """On the endpoint's node (INCOMING) the tunnel goes from this node to the client's: the
    mechanism's dst_ip is the local address, src_ip the remote one; the tunnel stands for src."""
    drv = vpp_bed.driver()
    u = vpp_bed.underlay
    client, endpoint = pods.make(), pods.make()
    # node A hosts the endpoint: the client's node is B
    pair = remote_pair("in", client, endpoint, u.b_ip, u.a_ip, "VXLAN", vni=99)
    applied = drv.call("apply", plan_from_xcon(pair.incoming, mtu=1500, offer=offer(base_dir)))
    assert set(tags(vpp_bed)) == {base.tag("in-in", "dst.afp"), base.tag("in-in", "src.vxlan")}
    with vpp_bed.vpp.client() as c:
        (t,) = c.api.vxlan_tunnel_v2_dump(sw_if_index=0xFFFFFFFF)
    assert (str(t.src_address), str(t.dst_address), int(t.vni)) == (u.a_ip, u.b_ip, 99)
    assert "10.60.1.2/30" in endpoint.ip("-o", "addr", "show", "dev", "nsm0")
    drv.call("remove", applied)
    assert_clean(vpp_bed, endpoint)


def test_configured_uplink_is_used_as_it_is(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """``vpp_uplink`` names an interface the operator made in VPP: tunnels use it, and no
    af_packet is made on the egress interface; a name VPP does not know fails the Request."""
    with vpp_bed.vpp.client() as c:
        made = c.api.af_packet_create_v3(
            mode=1,
            use_random_hw_addr=True,
            host_if_name="ul0",
            rx_frame_size=2048,
            tx_frame_size=2048,
            rx_frames_per_block=32,
            tx_frames_per_block=32,
            flags=0,
        )
        assert made.retval == 0
        c.api.sw_interface_tag_add_del(is_add=True, sw_if_index=made.sw_if_index, tag="operator's")
    u = vpp_bed.underlay
    pair = remote_pair("up", pods.make(), pods.make(), u.a_ip, u.b_ip, "VXLAN", vni=11)
    plan = plan_from_xcon(pair.outgoing, mtu=1500, offer=offer(base_dir))
    wrong = vpp_bed.driver(vpp_uplink="no-such-if")
    with pytest.raises(ForwarderError, match="vpp_uplink: VPP has no interface named 'no-such-if'"):
        wrong.call("apply", plan)
    drv = vpp_bed.driver(vpp_uplink="host-ul0")
    applied = drv.call("apply", plan)
    uplink = [d for d in vpp_bed.vpp.interfaces() if str(d.interface_name) == "host-ul0"]
    assert [str(d.tag) for d in uplink] == ["operator's"]  # left as the operator made it
    drv.call("remove", applied)
    assert [d for d in vpp_bed.vpp.interfaces() if str(d.interface_name) == "host-ul0"]


def test_wireguard_is_refused(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """The VPP driver does not offer WIREGUARD: the plan is refused before anything exists."""
    u = vpp_bed.underlay
    pair = remote_pair("wg", pods.make(), pods.make(), u.a_ip, u.b_ip, "WIREGUARD")
    with pytest.raises(InvalidRequest, match="WIREGUARD.*vpp driver"):
        plan_from_xcon(pair.outgoing, mtu=1500, offer=offer(base_dir))


@fake_only
@pytest.mark.parametrize(
    "message",
    [
        "af_packet_create_v3",
        "sw_interface_tag_add_del",
        "sw_interface_set_flags",
        "vxlan_add_del_tunnel_v3",
        "sw_interface_set_l2_xconnect",
    ],
)
def test_failure_at_each_step_leaves_nothing(
    vpp_bed: VppBed, pods: Pods, base_dir: str, message: str
) -> None:
    """VPP refusing any one call: the error names the call and VPP's error, and every VPP and
    Linux object made before it is gone."""
    drv = vpp_bed.driver()
    u = vpp_bed.underlay
    client, endpoint = pods.make(), pods.make()
    pair = remote_pair("f", client, endpoint, u.a_ip, u.b_ip, "VXLAN", vni=77)
    plan = plan_from_xcon(pair.outgoing, mtu=1500, offer=offer(base_dir))
    drv.call("apply", plan)  # the uplink exists now; the failing apply is the second one
    drv.call("remove", plan)
    assert vpp_bed.vpp.fake is not None
    vpp_bed.vpp.fake.fail(message, retval=-7)
    with pytest.raises(ForwarderError, match=f"{message}: VPP error -7 INVALID_VALUE") as err:
        drv.call("apply", plan)
    assert err.value.code == "INVALID_ARGUMENT"
    assert_clean(vpp_bed, client)


@fake_only
@pytest.mark.parametrize("message", ["memif_socket_filename_add_del_v2", "memif_create_v2"])
def test_memif_failure_leaves_nothing(
    vpp_bed: VppBed, pods: Pods, base_dir: str, message: str
) -> None:
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(
        memif_xcon("mf", a, b, "KERNEL_INTERFACE", "MEMIF"), mtu=1500, offer=offer(base_dir)
    )
    assert vpp_bed.vpp.fake is not None
    vpp_bed.vpp.fake.fail(message, retval=-79)
    with pytest.raises(ForwarderError, match=f"{message}: VPP error -79 IF_ALREADY_EXISTS") as err:
        drv.call("apply", plan)
    assert err.value.code == "ALREADY_EXISTS"
    assert_clean(vpp_bed, a, b)


@fake_only
@pytest.mark.parametrize(
    "message", ["af_packet_create_v3", "memif_create_v2", "sw_interface_set_l2_xconnect"]
)
def test_connection_dropped_mid_apply(
    vpp_bed: VppBed, pods: Pods, base_dir: str, message: str
) -> None:
    """The socket drops after VPP made the object but before it answered: a retriable
    UNAVAILABLE naming the socket, and nothing half-built (the undo reconnects)."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(
        memif_xcon("dr", a, b, "KERNEL_INTERFACE", "MEMIF"), mtu=1500, offer=offer(base_dir)
    )
    assert vpp_bed.vpp.fake is not None
    vpp_bed.vpp.fake.drop_on(message, after_apply=True)
    with pytest.raises(ForwarderError) as err:
        drv.call("apply", plan)
    assert err.value.code == "UNAVAILABLE" and err.value.retriable
    assert vpp_bed.vpp.api_socket in err.value.message
    assert_clean(vpp_bed, a, b)
    with vpp_bed.vpp.client() as c:  # no untagged leftovers either
        assert list(c.api.memif_dump()) == []
        assert list(c.api.af_packet_dump()) == []
    drv.call("apply", plan)  # and the next call works on a new connection
    assert drv.driver.vpp.connects == 2


def test_too_long_id_is_refused(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(local_xcon("x" * 60, a, b), mtu=1500, offer=offer(base_dir))
    with pytest.raises(InvalidRequest, match="too long for a VPP interface tag"):
        drv.call("apply", plan)
    assert_clean(vpp_bed, a, b)


def test_observe_and_sweep_from_vpp(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """A new driver (a restarted forwarder's worker) finds every end from VPP's tables and the
    tagged Linux interfaces, complete ones marked so; the sweep removes them all."""
    first = vpp_bed.driver()
    a, b, c = pods.make(), pods.make(), pods.make()
    os.makedirs(os.path.join(base_dir, "nse-ws", "nse0"))
    first.call("apply", plan_from_xcon(local_xcon("o1", a, b), mtu=1500, offer=offer(base_dir)))
    memif = memif_xcon("o2", c, b, "KERNEL_INTERFACE", "MEMIF")
    first.call("apply", plan_from_xcon(memif, mtu=1500, offer=offer(base_dir)))
    again = vpp_bed.driver()
    found = again.call("observe")
    present = {(o["id"], o["side"], o["inode"]) for o in found if o.get("complete", True)}
    assert {("o1", "src", a.inode), ("o1", "dst", b.inode), ("o2", "src", c.inode)} <= present
    assert ("o2", "dst", None) in present  # the memif stands for its end
    assert again.call("sweep", found) == 4  # the VPP objects; their veths go with them
    assert_clean(vpp_bed, a, b, c)


def test_pod_end_without_vpp_half_is_not_complete(
    vpp_bed: VppBed, pods: Pods, base_dir: str
) -> None:
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    applied = drv.call(
        "apply", plan_from_xcon(local_xcon("h1", a, b), mtu=1500, offer=offer(base_dir))
    )
    vpp_bed.vpp.restart()  # VPP lost everything; the pods still have their interfaces
    found = drv.call("observe")
    pod_ends = {(o["side"], o["complete"]) for o in found if o["id"] == "h1" and "complete" in o}
    assert pod_ends == {("src", False), ("dst", False)}
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)


def test_restart_changes_the_epoch_and_apply_works_again(
    vpp_bed: VppBed, pods: Pods, base_dir: str
) -> None:
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(local_xcon("r1", a, b), mtu=1500, offer=offer(base_dir))
    drv.call("apply", plan)
    before = drv.call("epoch")
    assert before and drv.call("epoch") == before
    vpp_bed.vpp.restart()
    after = drv.call("epoch")  # read on a new connection: the old one is gone
    assert drv.driver.vpp.connects == 2
    assert after and after != before
    drv.call("remove", plan)
    applied = drv.call("apply", plan)  # rebuilt in the new VPP
    assert set(tags(vpp_bed)) == {base.tag("r1", "src.afp"), base.tag("r1", "dst.afp")}
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)


@fake_only
def test_counters_from_the_stats_segment(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    drv.call("apply", plan_from_xcon(local_xcon("s1", a, b), mtu=1500, offer=offer(base_dir)))
    index = int(tags(vpp_bed)[base.tag("s1", "src.afp")].sw_if_index)
    assert vpp_bed.vpp.fake is not None
    vpp_bed.vpp.fake.set_counters(
        index, rx_packets=5, rx_bytes=500, tx_packets=7, tx_bytes=700, rx_errors=1, tx_errors=2
    )
    got = drv.call("stats", [{"key": "SRC-s1", "id": "s1", "side": "src", "inode": a.inode}])
    assert got == {
        "SRC-s1": {
            "rx_bytes": 500,
            "tx_bytes": 700,
            "rx_packets": 5,
            "tx_packets": 7,
            "rx_error_packets": 1,
            "tx_error_packets": 2,
        }
    }


@fake_only
def test_tap_where_vhost_net_exists(
    vpp_bed: VppBed, pods: Pods, base_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With /dev/vhost-net, a kernel end is a VPP tap whose host side VPP puts in the pod."""
    assert vpp_bed.vpp.fake is not None
    vpp_bed.vpp.fake.ctx.vhost_net = True
    monkeypatch.setattr(vdriver, "VHOST_NET", "/dev/null")
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    applied = drv.call(
        "apply", plan_from_xcon(local_xcon("t1", a, b), mtu=1500, offer=offer(base_dir))
    )
    assert set(tags(vpp_bed)) == {base.tag("t1", "src.tap"), base.tag("t1", "dst.tap")}
    assert a.links() == ["nsm0"] and "10.30.1.1/30" in a.ip("-o", "addr", "show", "dev", "nsm0")
    assert [n for n in vpp_bed.node_links() if n.startswith("nsv")] == []
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)


def test_vpp_absent_is_one_clear_line(vpp_bed: VppBed) -> None:
    vpp_bed.vpp.stop()
    drv = vdriver.VppDriver()
    config = {
        "src_ip": "127.0.0.1",
        "vpp_api_socket": "/tmp/nsm-no-vpp/api.sock",
        "vpp_connect_timeout": 0.3,
        "vpp_api_dir": vpp_bed.vpp.api_dir,
    }
    with pytest.raises(
        ForwarderError, match=r"cannot connect to VPP at /tmp/nsm-no-vpp/api.sock: no such socket"
    ):
        drv.init(config)


def offloads(netns_name: str, ifname: str) -> tuple[bool, bool]:
    """(tx, rx) checksum offload of ``ifname`` in namespace ``netns_name`` (SIOCETHTOOL)."""

    def read() -> tuple[bool, bool]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return tuple(  # type: ignore[return-value]
                _ethtool_get(sock.fileno(), ifname, cmd)
                for cmd in (ETHTOOL_GTXCSUM, ETHTOOL_GRXCSUM)
            )

    with netns_executor(netns_name) as thread:
        return thread.submit(read).result(10)


def _ethtool_get(sock_fd: int, ifname: str, cmd: int) -> bool:
    data = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
    fcntl.ioctl(sock_fd, SIOCETHTOOL, struct.pack("16sP", ifname.encode(), ctypes.addressof(data)))
    return bool(struct.unpack_from("II", data.raw)[1])


def test_kernel_ends_have_checksum_offload_off(vpp_bed: VppBed, pods: Pods, base_dir: str) -> None:
    """Both veth ends of an af_packet end leave nothing to "hardware": VPP's af_packet would
    read packets whose checksums nobody filled in."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    applied = drv.call(
        "apply", plan_from_xcon(local_xcon("ck", a, b), mtu=1500, offer=offer(base_dir))
    )
    node = vpp_bed.underlay.a
    assert offloads(node, host_name("ck", "src")) == (False, False)
    assert offloads(node, host_name("ck", "dst")) == (False, False)
    assert offloads(a.name, "nsm0") == (False, False)
    assert offloads(b.name, "nsm0") == (False, False)
    a.ip("link", "add", "plain0", "type", "veth", "peer", "name", "plain1")
    assert offloads(a.name, "plain0") == (True, True)  # what a veth has otherwise
    a.ip("link", "del", "plain0")
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)


def test_foreign_interface_with_the_pods_name_is_refused(
    vpp_bed: VppBed, pods: Pods, base_dir: str
) -> None:
    """Someone else's nsm0 in the pod: ALREADY_EXISTS, left alone, nothing of ours made."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    b.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "other0")
    plan = plan_from_xcon(local_xcon("fo", a, b), mtu=1500, offer=offer(base_dir))
    with pytest.raises(ForwarderError, match="nsm0 already exists") as err:
        drv.call("apply", plan)
    assert err.value.code == "ALREADY_EXISTS"
    assert sorted(b.links()) == ["nsm0", "other0"]
    assert tags(vpp_bed) == {} and a.links() == []
    assert [n for n in vpp_bed.node_links() if n.startswith("nsv")] == []


def node_veth(bed: VppBed, name: str) -> None:
    """A veth pair ``name`` / nsvpeer0 in the node namespace, made by someone else."""
    sh("ip", "-n", bed.underlay.a, "link", "add", name, "type", "veth", "peer", "name", "nsvpeer0")


def test_foreign_interface_with_the_host_name_is_refused(
    vpp_bed: VppBed, pods: Pods, base_dir: str
) -> None:
    """An interface of someone else's under the node-side name: refused, left alone."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    host = host_name("fh", "dst")
    node_veth(vpp_bed, host)
    plan = plan_from_xcon(local_xcon("fh", a, b), mtu=1500, offer=offer(base_dir))
    with pytest.raises(ForwarderError, match=f"{host} in the node netns is not ours"):
        drv.call("apply", plan)
    assert [n for n in vpp_bed.node_links() if n.startswith("nsv")] == sorted([host, "nsvpeer0"])
    assert tags(vpp_bed) == {} and a.links() == [] and b.links() == []


@pytest.mark.parametrize("vpp_half", ["kept", "deleted"])
def test_leftovers_of_the_same_id_are_replaced(
    vpp_bed: VppBed, pods: Pods, base_dir: str, vpp_half: str
) -> None:
    """What an earlier apply of this id left (its veths, with or without their af_packets in
    VPP) is taken down and built again; one clean cross-connect results."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    plan = plan_from_xcon(local_xcon("lo", a, b), mtu=1500, offer=offer(base_dir))
    drv.call("apply", plan)
    if vpp_half == "deleted":
        with vpp_bed.vpp.client() as c:
            for side in ("src", "dst"):
                assert c.api.af_packet_delete(host_if_name=host_name("lo", side)).retval == 0
    applied = drv.call("apply", plan)
    found = tags(vpp_bed)
    assert set(found) == {base.tag("lo", "src.afp"), base.tag("lo", "dst.afp")}
    i, j = (int(found[base.tag("lo", s)].sw_if_index) for s in ("src.afp", "dst.afp"))
    xc = vpp_bed.vpp.xconnects()
    assert xc[i] == j and xc[j] == i
    assert a.links() == ["nsm0"] and b.links() == ["nsm0"]
    assert sorted(n for n in vpp_bed.node_links() if n.startswith("nsv")) == sorted(
        host_name("lo", s) for s in ("src", "dst")
    )
    if REAL:
        assert a.ping("10.30.1.2", count=2)
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)


def test_untagged_af_packet_left_by_an_interrupted_apply_is_replaced(
    vpp_bed: VppBed, pods: Pods, base_dir: str
) -> None:
    """A worker killed between VPP's af_packet create and its tag left an untagged af_packet
    (no Linux side any more): its host name is this id's own, so it is deleted and made
    again, not refused as IF_ALREADY_EXISTS for ever."""
    drv = vpp_bed.driver()
    a, b = pods.make(), pods.make()
    host = host_name("ut", "src")
    node_veth(vpp_bed, host)
    with vpp_bed.vpp.client() as c:
        made = c.api.af_packet_create_v3(**af_packet_args(host))
        assert made.retval == 0
    sh("ip", "-n", vpp_bed.underlay.a, "link", "del", host)
    plan = plan_from_xcon(local_xcon("ut", a, b), mtu=1500, offer=offer(base_dir))
    applied = drv.call("apply", plan)
    assert set(tags(vpp_bed)) == {base.tag("ut", "src.afp"), base.tag("ut", "dst.afp")}
    drv.call("remove", applied)
    assert_clean(vpp_bed, a, b)
    with vpp_bed.vpp.client() as c:
        assert list(c.api.af_packet_dump()) == []
