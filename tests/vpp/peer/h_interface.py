"""Generic interface calls, L2 xconnect and the few vpe/memclnt basics.

Sources (VPP v26.06): ``src/vnet/interface_api.c`` (sw_interface_dump and details,
set_flags, tag_add_del, set_mac_address, add_del_address), ``src/vnet/ip/ip4_forward.c`` and
``ip6_forward.c`` (address conflicts), ``src/vnet/l2/l2_api.c`` and ``l2_input.c`` (xconnect),
``src/vpp/api/api.c`` (show_version), ``src/vlibmemory/memclnt_api.c`` (control_ping).
"""

from __future__ import annotations

import os
from typing import Any

from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import Ctx, Out, handles, reply, valid
from tests.vpp.peer.model import Interface
from tests.vpp.peer.wire import NO_INDEX, interface, mac, max_len, prefix

IF_STATUS_API_FLAG_ADMIN_UP = 1
IF_STATUS_API_FLAG_LINK_UP = 2
VERSION = "26.06-release"


@handles("show_version")
def show_version(ctx: Ctx, m: dict[str, Any]) -> Out:
    return reply(
        "show_version_reply",
        program="vpe",
        version=VERSION,
        build_date="2026-06-24T00:00:00",
        build_directory="/fake/vpp",
    )


@handles("control_ping")
def control_ping(ctx: Ctx, m: dict[str, Any]) -> Out:
    return reply("control_ping_reply", vpe_pid=os.getpid())


@handles("get_api_json")
def get_api_json(ctx: Ctx, m: dict[str, Any]) -> Out:
    return reply("get_api_json_reply", json=ctx.defs.api_json())


@handles("memclnt_keepalive")
def keepalive(ctx: Ctx, m: dict[str, Any]) -> Out:
    return reply("memclnt_keepalive_reply")


def details(iface: Interface) -> tuple[str, dict[str, Any]]:
    flags = (IF_STATUS_API_FLAG_ADMIN_UP if iface.admin_up else 0) | (
        IF_STATUS_API_FLAG_LINK_UP if iface.link_up else 0
    )
    return (
        "sw_interface_details",
        {
            "sw_if_index": iface.sw_if_index,
            "sup_sw_if_index": iface.sw_if_index,
            "l2_address": iface.mac if iface.ethernet and iface.mac else "00:00:00:00:00:00",
            "flags": flags,
            "link_mtu": iface.mtu,
            "mtu": [iface.mtu, 0, 0, 0],
            "interface_name": iface.name,
            "interface_dev_type": iface.dev_type,
            "tag": iface.tag or "",
        },
    )


@handles("sw_interface_dump")
def sw_interface_dump(ctx: Ctx, m: dict[str, Any]) -> Out:
    index = m["sw_if_index"]
    if not m["name_filter_valid"] and index not in (NO_INDEX, 0):
        found = valid(ctx, index)
        return [details(found)] if found is not None else []
    needle = str(m["name_filter"]).lower() if m["name_filter_valid"] else None
    return [
        details(iface)
        for _, iface in sorted(ctx.model.ifs.items())
        if needle is None or needle in iface.name.lower()
    ]


@handles("sw_interface_set_flags")
def set_flags(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = valid(ctx, m["sw_if_index"])
    if iface is None:
        return reply("sw_interface_set_flags_reply", Retval.INVALID_SW_IF_INDEX)
    ctx.model.set_admin(iface, bool(int(m["flags"]) & IF_STATUS_API_FLAG_ADMIN_UP))
    return reply("sw_interface_set_flags_reply")


@handles("sw_interface_tag_add_del")
def tag_add_del(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = valid(ctx, m["sw_if_index"])
    if iface is None:
        return reply("sw_interface_tag_add_del_reply", Retval.INVALID_SW_IF_INDEX)
    if m["is_add"]:
        if not m["tag"]:
            return reply("sw_interface_tag_add_del_reply", Retval.INVALID_VALUE)
        iface.tag = str(m["tag"])
    else:
        iface.tag = None
    return reply("sw_interface_tag_add_del_reply")


@handles("sw_interface_set_mac_address")
def set_mac_address(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = valid(ctx, m["sw_if_index"])
    if iface is None:
        return reply("sw_interface_set_mac_address_reply", Retval.INVALID_SW_IF_INDEX)
    if not iface.ethernet:  # no hw_address: "MAC address change is not supported"
        return reply("sw_interface_set_mac_address_reply", Retval.UNIMPLEMENTED)
    iface.mac = mac(m["mac_address"])
    if iface.af_packet is not None:  # af_packet_set_mac_address_function: the host link too
        ctx.host.set_mac(iface.af_packet.host_if_name, iface.mac)
    return reply("sw_interface_set_mac_address_reply")


@handles("sw_interface_add_del_address")
def add_del_address(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "sw_interface_add_del_address_reply"
    iface = valid(ctx, m["sw_if_index"])
    if iface is None:
        return reply(name, Retval.INVALID_SW_IF_INDEX)
    if m["del_all"]:
        iface.addresses.clear()
        return reply(name)
    if iface.sw_if_index == 0:  # "local0 interface doesn't support IP addressing"
        return reply(name, Retval.UNSUPPORTED)
    addr, length = prefix(m["prefix"])
    if length > max_len(addr):
        return reply(name, Retval.INVALID_VALUE)
    if addr.version == 6 and addr.is_link_local:
        if length != 128:
            return reply(name, Retval.ADDRESS_LENGTH_MISMATCH)
        return reply(name) if m["is_add"] else reply(name, Retval.ADDRESS_NOT_FOUND_FOR_INTERFACE)
    new = interface(addr, length)
    if not m["is_add"]:
        if new not in iface.addresses:
            return reply(name, Retval.ADDRESS_NOT_FOUND_FOR_INTERFACE)
        iface.addresses.remove(new)
        return reply(name)
    for other in ctx.model.ifs.values():
        for old in other.addresses:
            if old.version != new.version:
                continue
            if new.ip in old.network or old.ip in new.network:
                if other is iface and old.network.prefixlen == length and old.ip != new.ip:
                    continue  # an interface may have several addresses of one prefix
                return reply(name, Retval.ADDRESS_IN_USE)
    iface.addresses.append(new)
    return reply(name)


@handles("sw_interface_set_l2_xconnect")
def set_l2_xconnect(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "sw_interface_set_l2_xconnect_reply"
    rx = valid(ctx, m["rx_sw_if_index"])
    if rx is None:
        return reply(name, Retval.INVALID_SW_IF_INDEX)
    if m["enable"]:
        if valid(ctx, m["tx_sw_if_index"]) is None:
            return reply(name, Retval.INVALID_SW_IF_INDEX)
        rx.l2_xconnect = int(m["tx_sw_if_index"])
    else:
        rx.l2_xconnect = None
    return reply(name)


@handles("l2_xconnect_dump")
def l2_xconnect_dump(ctx: Ctx, m: dict[str, Any]) -> Out:
    return [
        ("l2_xconnect_details", {"rx_sw_if_index": i, "tx_sw_if_index": iface.l2_xconnect})
        for i, iface in sorted(ctx.model.ifs.items())
        if iface.l2_xconnect is not None
    ]
