"""The VPP interface VXLAN tunnels leave by: the underlay, shared by every tunnel.

Either an interface the operator set up in VPP (setting ``vpp_uplink``: its VPP name), used as it
is, or - the default, as upstream's VPP forwarder does - an ``af_packet`` interface on the egress
interface (the Linux interface carrying ``NSM_FORWARDER_SRC_IP``), with that address and the
egress MAC, and a default route via the node's default gateway when it has one. It is tagged
``nsm-uplink`` and kept across restarts and cross-connects (it belongs to no cross-connect).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from nsm_forwarder.drivers.errors import DriverError
from nsm_forwarder.drivers.linux import netns
from nsm_forwarder.drivers.linux.egress import Egress
from nsm_forwarder.drivers.linux.links import step
from nsm_forwarder.drivers.vpp.api import (
    AF_PACKET_FLAG_CKSUM_GSO,
    IF_ADMIN_UP,
    NONE,
    VppApi,
    VppRefused,
    af_packet_args,
)

log = logging.getLogger(__name__)

UPLINK_TAG = "nsm-uplink"
ADDRESS_EXISTS = frozenset({-105, -116, -81})  # ADDRESS_IN_USE, ENTRY_ALREADY_EXISTS, VALUE_EXIST


def find_interface(vpp: VppApi, name: str) -> int | None:
    """The sw_if_index of the VPP interface called ``name``, None if there is none."""
    for detail in vpp.dump("sw_interface_dump", sw_if_index=NONE):
        if str(detail.interface_name) == name:
            return int(detail.sw_if_index)
    return None


def ensure_uplink(vpp: VppApi, node_fd: int, egress: Egress, configured: str) -> int:
    """The sw_if_index of the underlay interface, created where needed (see module doc)."""
    if configured:
        index = find_interface(vpp, configured)
        if index is None:
            raise DriverError(f"vpp_uplink: VPP has no interface named {configured!r}")
        return index
    with netns.iproute_in(node_fd) as ipr:
        link = ipr.link("get", index=egress.ifindex)[0]
        mac = str(link.get_attr("IFLA_ADDRESS") or "")
        prefixlen = _prefixlen(ipr, egress)
        gateway = _default_gateway(ipr, egress)
    name = f"host-{egress.ifname}"
    index = find_interface(vpp, name)
    if index is None:
        with step(f"create VPP af_packet uplink on {egress.ifname}"):
            # the egress interface is the node's: its offloads stay as they are, and VPP
            # takes checksum/GSO state from the packet's virtio-net header instead
            args = af_packet_args(egress.ifname, flags=AF_PACKET_FLAG_CKSUM_GSO, hw_addr=mac)
            index = int(vpp.call("af_packet_create_v3", **args).sw_if_index)
        with step(f"tag VPP uplink {name}"):
            vpp.call("sw_interface_tag_add_del", is_add=True, sw_if_index=index, tag=UPLINK_TAG)
        log.info("VPP uplink %s created on %s (%s)", name, egress.ifname, egress.ip)
    address = ipaddress.ip_interface(f"{egress.ip}/{prefixlen}")
    with step(f"add {address} to VPP uplink {name}"):
        try:
            vpp.call(
                "sw_interface_add_del_address",
                sw_if_index=index,
                is_add=True,
                del_all=False,
                prefix=address,
            )
        except VppRefused as exc:
            if exc.retval not in ADDRESS_EXISTS:
                raise
    with step(f"set VPP uplink {name} up"):
        vpp.call("sw_interface_set_flags", sw_if_index=index, flags=IF_ADMIN_UP)
    if gateway is not None:
        _default_route(vpp, index, gateway)
    return index


def _prefixlen(ipr: Any, egress: Egress) -> int:
    want = ipaddress.ip_address(egress.ip)
    fam = socket.AF_INET if want.version == 4 else socket.AF_INET6
    for msg in ipr.addr("dump", family=fam, index=egress.ifindex):
        value = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if value and ipaddress.ip_address(str(value).split("%")[0]) == want:
            return int(msg["prefixlen"])
    return want.max_prefixlen


def _default_gateway(ipr: Any, egress: Egress) -> str | None:
    want = ipaddress.ip_address(egress.ip)
    fam = socket.AF_INET if want.version == 4 else socket.AF_INET6
    for msg in ipr.route("dump", family=fam):
        if msg["dst_len"] == 0 and msg.get_attr("RTA_OIF") == egress.ifindex:
            gateway = msg.get_attr("RTA_GATEWAY")
            if gateway:
                return str(gateway)
    return None


def _default_route(vpp: VppApi, index: int, gateway: str) -> None:
    gw = ipaddress.ip_address(gateway)
    v6 = gw.version == 6
    route = {
        "table_id": 0,
        "prefix": ipaddress.ip_network("::/0" if v6 else "0.0.0.0/0"),
        "n_paths": 1,
        "paths": [
            {
                "sw_if_index": index,
                "table_id": 0,
                "weight": 1,
                "preference": 0,
                "type": 0,  # FIB_API_PATH_TYPE_NORMAL
                "flags": 0,
                "proto": 1 if v6 else 0,  # FIB_API_PATH_NH_PROTO_IP6 / _IP4
                "nh": {"address": {"ip6" if v6 else "ip4": gw}},
                "n_labels": 0,
                # a fixed array of 16 in the message, whatever n_labels says
                "label_stack": [{"is_uniform": 0, "label": 0, "ttl": 0, "exp": 0}] * 16,
            }
        ],
    }
    with step(f"add VPP default route via {gateway}"):
        try:
            vpp.call("ip_route_add_del", is_add=True, is_multipath=False, route=route)
        except VppRefused as exc:
            if exc.retval not in ADDRESS_EXISTS:
                raise
