"""tap/tun interfaces (the tapv2 API).

Sources (VPP v26.06): ``src/plugins/tap/tapv2_api.c`` and ``tap.c`` (``tap_create_if``): a
requested id already used -> INVALID_INTERFACE, else the lowest free id; ATTACH without a host
name -> NO_MATCHING_INTERFACE; a host namespace that cannot be opened -> SYSCALL_ERROR_2;
TUNSETIFF failing (a non-tap device of that name exists) -> SYSCALL_ERROR_3; no
``/dev/vhost-net`` -> SYSCALL_ERROR_1 (the case on this machine kind: ``vhost_net=False``);
netlink failures configuring the host side -> NETLINK_ERROR. The interface is ``tap<id>`` (or
``tun<id>``), device class "tap", link up at creation. ``tap_delete_v2`` on anything but a tap
-> INVALID_SW_IF_INDEX; it unsets persistence and closes the device, so the host tap goes away.
A tap made without PERSIST disappears when VPP dies (its file descriptors close).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import Ctx, Out, handles, reply, valid
from tests.vpp.peer.linux import LinuxError, TunSetIffError
from tests.vpp.peer.model import TapInfo
from tests.vpp.peer.wire import NO_INDEX, IPAddress, IPInterface, mac, random_mac

TAP_API_FLAG_PERSIST = 4
TAP_API_FLAG_ATTACH = 8
TAP_API_FLAG_TUN = 16
TAP_MAX_INSTANCE = 8192


def _host_config(m: dict[str, Any]) -> tuple[list[IPInterface], list[IPAddress]]:
    addresses: list[IPInterface] = []
    if m["host_ip4_prefix_set"]:
        p = m["host_ip4_prefix"]
        addresses.append(ipaddress.IPv4Interface((bytes(p["address"]), int(p["len"]))))
    if m["host_ip6_prefix_set"]:
        p = m["host_ip6_prefix"]
        addresses.append(ipaddress.IPv6Interface((bytes(p["address"]), int(p["len"]))))
    gateways: list[IPAddress] = []
    if m["host_ip4_gw_set"]:
        gateways.append(ipaddress.IPv4Address(bytes(m["host_ip4_gw"])))
    if m["host_ip6_gw_set"]:
        gateways.append(ipaddress.IPv6Address(bytes(m["host_ip6_gw"])))
    return addresses, gateways


def _create(ctx: Ctx, m: dict[str, Any]) -> tuple[int, int]:
    model = ctx.model
    flags = int(m["tap_flags"])
    tun = bool(flags & TAP_API_FLAG_TUN)
    ident = int(m["id"])
    if ident != NO_INDEX:
        if ident in model.tap_ids:
            return Retval.INVALID_INTERFACE, NO_INDEX
    else:
        ident = next(i for i in range(TAP_MAX_INSTANCE + 2) if i not in model.tap_ids)
    if ident > TAP_MAX_INSTANCE:
        return Retval.UNSPECIFIED, NO_INDEX
    host_if_name = str(m["host_if_name"]) if m["host_if_name_set"] else None
    if flags & TAP_API_FLAG_ATTACH and host_if_name is None:
        return Retval.NO_MATCHING_INTERFACE, NO_INDEX
    ns = str(m["host_namespace"]) if m["host_namespace_set"] else None
    if ns is not None and not ctx.host.ns_exists(ns):
        return Retval.SYSCALL_ERROR_2, NO_INDEX
    existing = ctx.host.link(host_if_name, ns) if host_if_name else None
    attach = existing is not None and existing["kind"] == "tun" and flags & TAP_API_FLAG_ATTACH
    if existing is not None and not attach:
        return Retval.SYSCALL_ERROR_3, NO_INDEX
    if not ctx.vhost_net:
        return Retval.SYSCALL_ERROR_1, NO_INDEX  # open ("/dev/vhost-net") fails
    device = host_if_name or ctx.host.free_name("tun" if tun else "tap", ns)
    host_mac = None if tun else mac(m["host_mac_addr"]) if m["host_mac_addr_set"] else None
    if not tun and (host_mac is None or host_mac == "00:00:00:00:00:00"):
        host_mac = random_mac()
    if not attach:
        addresses, gateways = _host_config(m)
        try:
            ctx.host.create_tap(
                device,
                ns,
                tun=tun,
                mac=host_mac,
                mtu=int(m["host_mtu_size"]) if m["host_mtu_set"] else None,
                addresses=addresses,
                gateways=gateways,
                bridge=str(m["host_bridge"]) if m["host_bridge_set"] else None,
            )
        except TunSetIffError:
            return Retval.SYSCALL_ERROR_3, NO_INDEX
        except LinuxError:
            return Retval.NETLINK_ERROR, NO_INDEX
    vpp_mac = None if tun else random_mac() if m["use_random_mac"] else mac(m["mac_address"])
    info = TapInfo(ident, device, ns, flags, host_mac, tun, created=not attach)
    iface = model.add_interface(
        name=f"{'tun' if tun else 'tap'}{ident}",
        dev_type="tap",
        kind="tap",
        ethernet=not tun,
        mac=vpp_mac,
        link_up=True,
        tap=info,
    )
    model.tap_ids.add(ident)
    return 0, iface.sw_if_index


@handles("tap_create_v3")
def create_v3(ctx: Ctx, m: dict[str, Any]) -> Out:
    rv, index = _create(ctx, m)
    iface = ctx.model.get(index) if rv == 0 else None
    if iface is not None and m["tag"]:
        iface.tag = str(m["tag"])[:63]
    return reply("tap_create_v3_reply", rv, sw_if_index=index)


@handles("tap_delete_v2")
def delete_v2(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = valid(ctx, m["sw_if_index"])
    if iface is None or iface.tap is None:
        return reply("tap_delete_v2_reply", Retval.INVALID_SW_IF_INDEX)
    info = iface.tap
    ctx.model.delete_interface(iface.sw_if_index)
    ctx.model.tap_ids.discard(info.id)
    ctx.host.delete_link(info.host_if_name, info.host_namespace)
    return reply("tap_delete_v2_reply")
