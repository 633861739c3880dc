"""VXLAN tunnels.

Sources (VPP v26.06): ``src/plugins/vxlan/vxlan_api.c`` (``vxlan_add_del_tunnel_clean_input``:
unknown encap VRF -> NO_SUCH_FIB, mixed families -> INVALID_VALUE, src == dst ->
SAME_SRC_DST, multicast dst without a valid mcast interface -> INVALID_SW_IF_INDEX; the v2
dump with ``sw_if_index`` ~0 lists all tunnels, otherwise only that one) and ``vxlan.c``
(``vnet_vxlan_add_del_tunnel``: ports default to 4789; the tunnel key is
dst+src+src_port+fib+vni for IPv4 unicast, and dst+src_port+fib+vni for IPv4 multicast and for
IPv6, with the vni shifted into 24 bits; an existing key -> TUNNEL_EXIST, deleting a missing one
-> NO_SUCH_ENTRY; decap_next ~0 means l2-input (1), valid values are 0 (drop) and 1;
instance ~0 takes the pool index, a used instance -> INSTANCE_IN_USE; name
``vxlan_tunnel<instance>``, device class "VXLAN"; a new tunnel is admin-up, and its link
follows admin state).
"""

from __future__ import annotations

from typing import Any

from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import Ctx, Out, handles, reply, valid
from tests.vpp.peer.model import VxlanInfo
from tests.vpp.peer.wire import NO_INDEX, address, random_mac

UDP_DST_PORT_VXLAN = 4789
VXLAN_INPUT_NEXT_L2_INPUT = 1
VXLAN_INPUT_N_NEXT = 2


def _add_del(ctx: Ctx, m: dict[str, Any]) -> tuple[int, int]:
    """(retval, sw_if_index) of one add/del call."""
    model = ctx.model
    src, dst = address(m["src_address"]), address(m["dst_address"])
    vrf = int(m["encap_vrf_id"])
    if vrf not in model.tables[src.version]:
        return Retval.NO_SUCH_FIB, NO_INDEX
    if src.version != dst.version:
        return Retval.INVALID_VALUE, NO_INDEX
    if src == dst:
        return Retval.SAME_SRC_DST, NO_INDEX
    mcast = int(m["mcast_sw_if_index"])
    if dst.is_multicast and valid(ctx, mcast) is None:
        return Retval.INVALID_SW_IF_INDEX, NO_INDEX
    src_port = int(m.get("src_port", 0)) or UDP_DST_PORT_VXLAN
    dst_port = int(m.get("dst_port", 0)) or UDP_DST_PORT_VXLAN
    vni = int(m["vni"])
    if src.version == 4 and not dst.is_multicast:
        key: tuple[Any, ...] = (4, dst, src, src_port, vrf, vni & 0xFFFFFF)
    else:
        key = (src.version, dst, src_port, vrf, vni & 0xFFFFFF)
    existing = model.vxlan_keys.get(key)
    if not m["is_add"]:
        if existing is None:
            return Retval.NO_SUCH_ENTRY, NO_INDEX
        iface = model.ifs[existing]
        assert iface.vxlan is not None
        model.set_admin(iface, False)
        model.delete_interface(existing)
        del model.vxlan_keys[key]
        model.vxlan_instances.discard(iface.vxlan.instance)
        model.vxlan_pool.put(iface.vxlan.dev_instance)
        return 0, existing
    if existing is not None:
        return Retval.TUNNEL_EXIST, NO_INDEX
    decap = int(m["decap_next_index"])
    if decap == NO_INDEX:
        decap = VXLAN_INPUT_NEXT_L2_INPUT
    if decap >= VXLAN_INPUT_N_NEXT:
        return Retval.INVALID_DECAP_NEXT, NO_INDEX
    dev_instance = model.vxlan_pool.get()
    instance = int(m["instance"])
    if instance == NO_INDEX:
        instance = dev_instance
    if instance in model.vxlan_instances:
        model.vxlan_pool.put(dev_instance)
        return Retval.INSTANCE_IN_USE, NO_INDEX
    is_l3 = bool(m.get("is_l3", False))
    info = VxlanInfo(
        src, dst, vni, src_port, dst_port, instance, dev_instance, decap, mcast, vrf, is_l3, key
    )
    iface = model.add_interface(
        name=f"vxlan_tunnel{instance}",
        dev_type="VXLAN",
        kind="vxlan",
        ethernet=not is_l3,
        mac=None if is_l3 else random_mac(),
        vxlan=info,
    )
    model.vxlan_keys[key] = iface.sw_if_index
    model.vxlan_instances.add(instance)
    model.set_admin(iface, True)
    return 0, iface.sw_if_index


@handles("vxlan_add_del_tunnel_v3", "vxlan_add_del_tunnel_v2", "vxlan_add_del_tunnel")
def add_del(ctx: Ctx, m: dict[str, Any]) -> Out:
    if "is_l3" in m:
        name = "vxlan_add_del_tunnel_v3_reply"
    elif "src_port" in m:
        name = "vxlan_add_del_tunnel_v2_reply"
    else:
        name = "vxlan_add_del_tunnel_reply"
    rv, index = _add_del(ctx, m)
    return reply(name, rv, sw_if_index=index)


@handles("vxlan_tunnel_v2_dump")
def dump_v2(ctx: Ctx, m: dict[str, Any]) -> Out:
    index = int(m["sw_if_index"])
    tunnels = [i for i in ctx.model.ifs.values() if i.vxlan is not None]
    if index != NO_INDEX:
        tunnels = [i for i in tunnels if i.sw_if_index == index]
    out: Out = []
    for iface in sorted(tunnels, key=lambda i: i.vxlan.dev_instance if i.vxlan else 0):
        t = iface.vxlan
        assert t is not None
        fields = {
            "sw_if_index": iface.sw_if_index,
            "instance": t.instance,
            "src_address": t.src,
            "dst_address": t.dst,
            "src_port": t.src_port,
            "dst_port": t.dst_port,
            "mcast_sw_if_index": t.mcast_sw_if_index,
            "encap_vrf_id": t.encap_vrf_id,
            "decap_next_index": t.decap_next_index,
            "vni": t.vni,
        }
        out.append(("vxlan_tunnel_v2_details", fields))
    return out
