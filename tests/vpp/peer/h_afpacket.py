"""af_packet ("host-") interfaces.

Sources (VPP v26.06): ``src/plugins/af_packet/af_packet_api.c`` and ``af_packet.c``
(``af_packet_create_if``: duplicate host name first -> IF_ALREADY_EXISTS with the existing
sw_if_index; a host interface missing from VPP's namespace -> INVALID_INTERFACE; a host
interface that is down is brought up; ``af_packet_delete_if``: unknown name ->
SYSCALL_ERROR_1), ``device.c`` (name ``host-<host_if_name>``, device class "af-packet", admin
up/down sets the host link up/down, a MAC change is applied to the host link too).
"""

from __future__ import annotations

from typing import Any

from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import Ctx, Out, handles, reply
from tests.vpp.peer.model import AfPacketInfo, Interface
from tests.vpp.peer.wire import NO_INDEX, mac, random_mac

AF_PACKET_API_MODE_ETHERNET = 1
AF_PACKET_API_MODE_IP = 2
#: the flags af_packet_create and _v2 apply (QDISC_BYPASS | CKSUM_GSO)
DEFAULT_FLAGS = 3


def _find(ctx: Ctx, host_if_name: str) -> Interface | None:
    for iface in ctx.model.ifs.values():
        if iface.af_packet is not None and iface.af_packet.host_if_name == host_if_name:
            return iface
    return None


def _create(ctx: Ctx, m: dict[str, Any], mode: int, flags: int) -> tuple[int, int]:
    """(retval, sw_if_index) of ``af_packet_create_if``."""
    host = str(m["host_if_name"])
    existing = _find(ctx, host)
    if existing is not None:
        return Retval.IF_ALREADY_EXISTS, existing.sw_if_index
    link = ctx.host.link(host)
    if link is None:
        return Retval.INVALID_INTERFACE, 0
    if not link["up"] and not ctx.host.set_up(host, True):
        return Retval.SYSCALL_ERROR_1, 0
    ethernet = mode == AF_PACKET_API_MODE_ETHERNET
    hw = None
    if ethernet:
        # the API passes hw_addr unless use_random_hw_addr: all zeroes is taken as given
        hw = random_mac() if m["use_random_hw_addr"] else mac(m["hw_addr"])
    info = AfPacketInfo(
        host, "ethernet" if ethernet else "ip", flags, ctx.model.af_packet_pool.get()
    )
    iface = ctx.model.add_interface(
        name=f"host-{host}",
        dev_type="af-packet",
        kind="af_packet",
        ethernet=ethernet,
        mac=hw,
        link_up=True,
        af_packet=info,
    )
    return 0, iface.sw_if_index


@handles("af_packet_create_v3")
def create_v3(ctx: Ctx, m: dict[str, Any]) -> Out:
    mode = int(m["mode"])
    if mode not in (AF_PACKET_API_MODE_ETHERNET, AF_PACKET_API_MODE_IP):
        return reply("af_packet_create_v3_reply", Retval.INVALID_VALUE, sw_if_index=NO_INDEX)
    rv, index = _create(ctx, m, mode, int(m["flags"]))
    return reply("af_packet_create_v3_reply", rv, sw_if_index=index)


@handles("af_packet_create", "af_packet_create_v2")
def create_v1_v2(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "af_packet_create_v2_reply" if "num_rx_queues" in m else "af_packet_create_reply"
    rv, index = _create(ctx, m, AF_PACKET_API_MODE_ETHERNET, DEFAULT_FLAGS)
    return reply(name, rv, sw_if_index=index)


@handles("af_packet_delete")
def delete(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = _find(ctx, str(m["host_if_name"]))
    if iface is None or iface.af_packet is None:
        return reply("af_packet_delete_reply", Retval.SYSCALL_ERROR_1)
    ctx.model.delete_interface(iface.sw_if_index)
    ctx.model.af_packet_pool.put(iface.af_packet.dev_instance)
    return reply("af_packet_delete_reply")


@handles("af_packet_set_l4_cksum_offload")
def set_l4_cksum_offload(ctx: Ctx, m: dict[str, Any]) -> Out:
    return reply("af_packet_set_l4_cksum_offload_reply")  # deprecated: a no-op in VPP


@handles("af_packet_dump")
def dump(ctx: Ctx, m: dict[str, Any]) -> Out:
    found = [i for i in ctx.model.ifs.values() if i.af_packet is not None]
    found.sort(key=lambda i: i.af_packet.dev_instance if i.af_packet else 0)
    return [
        ("af_packet_details", {"sw_if_index": i.sw_if_index, "host_if_name": i.host_if_name})
        for i in found
    ]
