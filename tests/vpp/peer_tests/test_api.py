"""The protocol-level VPP (tests/vpp/peer) against a real ``vpp_papi.VPPApiClient``: messages,
objects and their VPP semantics."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from tests.vpp.peer import FakeVPP, Retval, retval_name
from tests.vpp.peer.testing import api_client
from tests.vpp.peer_tests.conftest import NO_INDEX, memif, names


# -- connect, basics ------------------------------------------------------------------------
def test_connect_show_version_ping_and_local0(vpp: FakeVPP) -> None:
    with api_client(vpp.api_socket, name="worker-1") as client:
        assert client.transport.socket_index == 0x80000001  # registration 1, bit 31
        assert "sockclnt_create_reply_35166268" in client.transport.message_table
        version = client.api.show_version()
        assert (version.retval, version.program, version.version) == (0, "vpe", "26.06-release")
        ping = client.api.control_ping()
        assert ping.retval == 0 and ping.vpe_pid == os.getpid()
        (local0,) = client.api.sw_interface_dump()
        assert (local0.sw_if_index, local0.interface_name) == (0, "local0")
        assert local0.interface_dev_type == "local"
        assert vpp.clients() == {0x80000001: "worker-1"}
    assert vpp.calls[:1] == ["sockclnt_create"] and vpp.calls[-1] == "sockclnt_delete"
    assert vpp.unhandled == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # vpp_papi's importlib.resources use
def test_bootstrap_client_gets_the_definitions_from_get_api_json(vpp: FakeVPP) -> None:
    from vpp_papi import VPPApiClient

    client = VPPApiClient(server_address=vpp.api_socket, bootstrapapi=True)
    client.connect("bootstrap")
    try:
        assert client.api.sw_interface_dump()[0].interface_name == "local0"
    finally:
        client.disconnect()
    assert retval_name(-79) == "VNET_API_ERROR_IF_ALREADY_EXISTS"


def test_unimplemented_call_answers_minus_one_and_is_recorded(api: Any, vpp: FakeVPP) -> None:
    assert api.want_interface_events(enable_disable=1).retval == Retval.UNSPECIFIED
    assert api.bridge_domain_dump() == []  # an old-style dump: no details, the ping ends it
    assert vpp.unhandled == ["want_interface_events", "bridge_domain_dump"]


# -- memif ----------------------------------------------------------------------------------
def test_memif_sockets_and_interfaces(api: Any, vpp: FakeVPP, workdir: str) -> None:
    r = api.memif_socket_filename_add_del_v2(is_add=True, socket_filename="nsm/a.sock")
    assert r.retval == 0 and r.socket_id not in (0, NO_INDEX)
    sid = r.socket_id
    assert (
        api.memif_socket_filename_add_del_v2(is_add=True, socket_id=0, socket_filename="x").retval
        == Retval.INVALID_ARGUMENT
    )
    again = api.memif_socket_filename_add_del_v2(
        is_add=True, socket_id=sid, socket_filename="nsm/a.sock"
    )
    assert again.retval == 0
    other = api.memif_socket_filename_add_del_v2(is_add=True, socket_id=sid, socket_filename="b")
    assert other.retval == Retval.ENTRY_ALREADY_EXISTS
    master = memif(api, sid, 7, role=0)
    slave = memif(api, 0, 7, role=1)
    assert names(api)[master] == f"memif{sid}/7" and names(api)[slave] == "memif0/7"
    assert api.memif_create_v2(role=0, socket_id=sid, id=7).retval == Retval.SUBIF_ALREADY_EXISTS
    assert api.memif_create_v2(role=1, socket_id=sid, id=8).retval == Retval.SUBIF_ALREADY_EXISTS
    assert api.memif_create_v2(role=0, socket_id=12345, id=1).retval == Retval.INVALID_ARGUMENT
    assert (
        api.memif_create_v2(role=0, socket_id=sid, id=9, ring_size=1000).retval
        == Retval.INVALID_ARGUMENT
    )
    path = f"{workdir}/nsm/a.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        assert probe.connect_ex(path) == 0  # the master listens
    details = {d.sw_if_index: d for d in api.memif_dump()}
    assert details[master].role == 0 and details[slave].role == 1 and details[master].id == 7
    assert details[master].ring_size == 1  # never connected: run.log2_ring_size is 0
    dumped = {d.socket_id: d.socket_filename for d in api.memif_socket_filename_dump()}
    assert dumped == {0: f"{workdir}/memif.sock", sid: path}
    busy = api.memif_socket_filename_add_del_v2(is_add=False, socket_id=sid, socket_filename="")
    assert busy.retval == Retval.UNEXPECTED_INTF_STATE
    assert api.memif_delete(sw_if_index=master).retval == 0
    assert os.path.exists(path)  # closed, the file stays (clib_socket_close)
    assert api.memif_delete(sw_if_index=master).retval == Retval.INVALID_SW_IF_INDEX
    assert api.memif_delete(sw_if_index=0).retval == Retval.INVALID_SW_IF_INDEX
    assert api.memif_socket_filename_add_del_v2(is_add=False, socket_id=sid).retval == 0
    assert (
        api.memif_socket_filename_add_del_v2(is_add=False, socket_id=sid).retval
        == Retval.INVALID_ARGUMENT
    )
    assert [s.socket_id for s in vpp.memif_sockets()] == [0]


def test_delete_frees_index_and_reuse_is_last_freed_first(api: Any) -> None:
    a, b, c = memif(api, ident=1), memif(api, ident=2), memif(api, ident=3)
    assert (a, b, c) == (1, 2, 3)
    assert api.memif_delete(sw_if_index=b).retval == 0
    assert api.memif_delete(sw_if_index=a).retval == 0
    assert [memif(api, ident=n) for n in (4, 5, 6)] == [1, 2, 4]


# -- vxlan ----------------------------------------------------------------------------------
def test_vxlan_create_dump_delete(api: Any, vpp: FakeVPP) -> None:
    args = {
        "src_address": "10.1.0.1",
        "dst_address": "10.1.0.2",
        "vni": 42,
        "decap_next_index": NO_INDEX,
    }
    r = api.vxlan_add_del_tunnel_v3(**args)
    assert r.retval == 0
    assert names(api)[r.sw_if_index] == "vxlan_tunnel0"
    assert api.vxlan_add_del_tunnel_v3(**args).retval == Retval.TUNNEL_EXIST
    named = api.vxlan_add_del_tunnel_v3(**{**args, "vni": 43, "instance": 0})
    assert named.retval == Retval.INSTANCE_IN_USE
    named = api.vxlan_add_del_tunnel_v3(**{**args, "vni": 43, "instance": 7})
    assert named.retval == 0 and names(api)[named.sw_if_index] == "vxlan_tunnel7"
    same = {**args, "dst_address": "10.1.0.1"}
    assert api.vxlan_add_del_tunnel_v3(**same).retval == Retval.SAME_SRC_DST
    assert api.vxlan_add_del_tunnel_v3(**{**args, "encap_vrf_id": 9}).retval == Retval.NO_SUCH_FIB
    (t,) = [d for d in api.vxlan_tunnel_v2_dump(sw_if_index=NO_INDEX) if d.vni == 42]
    assert (str(t.src_address), str(t.dst_address), t.dst_port, t.decap_next_index) == (
        "10.1.0.1",
        "10.1.0.2",
        4789,
        1,
    )
    assert api.vxlan_tunnel_v2_dump(sw_if_index=0) == []  # local0 is not a tunnel
    (v,) = [i for i in vpp.vxlan_tunnels() if i.vxlan and i.vxlan.vni == 42]
    assert v.admin_up and v.link_up
    gone = api.vxlan_add_del_tunnel_v3(**{**args, "is_add": False})
    assert gone.retval == 0 and gone.sw_if_index == r.sw_if_index
    assert api.vxlan_add_del_tunnel_v3(**{**args, "is_add": False}).retval == Retval.NO_SUCH_ENTRY


# -- l2 xconnect, tags, flags ---------------------------------------------------------------
def test_xconnect_both_ways_and_cleanup_on_delete(api: Any, vpp: FakeVPP) -> None:
    a, b, c, d = (memif(api, ident=n) for n in range(4))
    for rx, tx in ((a, b), (b, a), (c, d)):
        assert api.sw_interface_set_l2_xconnect(rx_sw_if_index=rx, tx_sw_if_index=tx).retval == 0
    assert {(x.rx_sw_if_index, x.tx_sw_if_index) for x in api.l2_xconnect_dump()} == {
        (a, b),
        (b, a),
        (c, d),
    }
    bad = api.sw_interface_set_l2_xconnect(rx_sw_if_index=99, tx_sw_if_index=a)
    assert bad.retval == Retval.INVALID_SW_IF_INDEX
    bad = api.sw_interface_set_l2_xconnect(rx_sw_if_index=a, tx_sw_if_index=99)
    assert bad.retval == Retval.INVALID_SW_IF_INDEX
    api.memif_delete(sw_if_index=a)  # resets a and the interface a sent to (b)
    api.memif_delete(sw_if_index=d)  # d sent nowhere: c keeps pointing at the freed index
    assert vpp.xconnects() == {c: d}
    off = api.sw_interface_set_l2_xconnect(rx_sw_if_index=c, tx_sw_if_index=0, enable=False)
    assert off.retval == 0 and vpp.xconnects() == {}


def test_tags_flags_mac_and_addresses(api: Any, vpp: FakeVPP) -> None:
    a, b = memif(api, ident=1), memif(api, ident=2)
    assert api.sw_interface_tag_add_del(is_add=True, sw_if_index=a, tag="nsm-conn-1").retval == 0
    assert (
        api.sw_interface_tag_add_del(is_add=True, sw_if_index=a, tag="").retval
        == Retval.INVALID_VALUE
    )
    assert (
        api.sw_interface_tag_add_del(is_add=True, sw_if_index=77, tag="x").retval
        == Retval.INVALID_SW_IF_INDEX
    )
    assert {d.sw_if_index: d.tag for d in api.sw_interface_dump()}[a] == "nsm-conn-1"
    found = vpp.by_tag("nsm-conn-1")
    assert found is not None and found.sw_if_index == a
    assert api.sw_interface_set_flags(sw_if_index=a, flags=1).retval == 0
    (d,) = api.sw_interface_dump(sw_if_index=a)
    assert int(d.flags) == 1  # admin up; a memif without a peer has no link
    assert (
        api.sw_interface_set_mac_address(sw_if_index=a, mac_address="02:00:00:00:00:0a").retval == 0
    )
    assert str(api.sw_interface_dump(sw_if_index=a)[0].l2_address) == "02:00:00:00:00:0a"
    assert (
        api.sw_interface_set_mac_address(sw_if_index=0, mac_address="02:00:00:00:00:0b").retval
        == Retval.UNIMPLEMENTED
    )
    add = api.sw_interface_add_del_address
    assert add(sw_if_index=a, is_add=True, prefix="10.2.0.1/24").retval == 0
    assert add(sw_if_index=a, is_add=True, prefix="10.2.0.2/24").retval == 0  # same prefix
    assert add(sw_if_index=a, is_add=True, prefix="10.2.0.1/24").retval == Retval.ADDRESS_IN_USE
    assert add(sw_if_index=b, is_add=True, prefix="10.2.0.9/16").retval == Retval.ADDRESS_IN_USE
    assert (
        add(sw_if_index=b, is_add=False, prefix="10.2.0.1/24").retval
        == Retval.ADDRESS_NOT_FOUND_FOR_INTERFACE
    )
    assert add(sw_if_index=0, is_add=True, prefix="10.3.0.1/24").retval == Retval.UNSUPPORTED
    assert [str(x.prefix) for x in api.ip_address_dump(sw_if_index=a)] == [
        "10.2.0.1/24",
        "10.2.0.2/24",
    ]
    assert api.memif_delete(sw_if_index=a).retval == 0
    assert vpp.by_tag("nsm-conn-1") is None
    assert memif(api, ident=3) == a and vpp.interfaces()[a].addresses == []


def test_routes_and_neighbors(api: Any, vpp: FakeVPP) -> None:
    a = memif(api, ident=1)
    nh = {"address": {"ip4": bytes([10, 4, 0, 1])}}
    path = {"sw_if_index": a, "proto": 0, "nh": nh, "label_stack": [{}] * 16}
    route = {"table_id": 0, "prefix": "192.168.5.0/24", "n_paths": 1, "paths": [path]}
    r = api.ip_route_add_del(is_add=True, route=route)
    assert r.retval == 0 and r.stats_index != NO_INDEX
    (got,) = vpp.routes()
    assert str(got.prefix) == "192.168.5.0/24" and got.paths[0]["sw_if_index"] == a
    assert (
        api.ip_route_add_del(is_add=True, route={**route, "table_id": 5}).retval
        == Retval.NO_SUCH_FIB
    )
    stale = {**route, "paths": [{**path, "sw_if_index": 99}]}
    assert api.ip_route_add_del(is_add=True, route=stale).retval == Retval.NO_MATCHING_INTERFACE
    assert (
        api.ip_route_add_del(is_add=True, route={**route, "n_paths": 0, "paths": []}).retval
        == Retval.NO_PATHS_IN_ROUTE
    )
    assert api.ip_route_add_del(is_add=False, route=route).retval == 0 and vpp.routes() == []
    neighbor = {
        "sw_if_index": a,
        "flags": 1,
        "mac_address": "02:00:00:00:00:01",
        "ip_address": "10.4.0.1",
    }
    assert api.ip_neighbor_add_del(is_add=True, neighbor=neighbor).retval == 0
    dynamic = {**neighbor, "flags": 0, "mac_address": "02:00:00:00:00:02"}
    assert api.ip_neighbor_add_del(is_add=True, neighbor=dynamic).retval == -2  # static kept
    (n,) = vpp.neighbors()
    assert n.static and n.mac == "02:00:00:00:00:01"
    assert api.ip_neighbor_add_del(is_add=False, neighbor=neighbor).retval == 0
    assert api.ip_neighbor_add_del(is_add=False, neighbor=neighbor).retval == Retval.NO_SUCH_ENTRY
    assert (
        api.ip_neighbor_add_del(is_add=True, neighbor={**neighbor, "sw_if_index": 50}).retval
        == Retval.INVALID_SW_IF_INDEX
    )
