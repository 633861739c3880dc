"""Routes, neighbours and the address dump.

Sources (VPP v26.06): ``src/vnet/ip/ip_api.c`` (ip_route_add_del, ip_address_dump),
``src/vnet/fib/fib_api.c`` (``fib_api_table_id_decode``, ``fib_api_path_decode``,
``fib_api_route_add_del``), ``src/vnet/ip/lookup.c`` (``fib_prefix_validate``),
``src/vnet/ip-neighbor/ip_neighbor_api.c`` and ``ip_neighbor.c`` (add/del, static entries).
Only table 0 of each family exists (ip_table_add_del is not implemented). The routes kept are
the ones the API added; the connected/attached entries VPP derives from interface addresses are
not modelled.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import Ctx, Out, handles, reply, valid
from tests.vpp.peer.model import Neighbor, Route
from tests.vpp.peer.wire import NO_INDEX, address, mac, max_len, network, prefix

FIB_API_PATH_TYPE_NORMAL = 0
FIB_API_PATH_NH_PROTO_IP4 = 0
FIB_API_PATH_NH_PROTO_IP6 = 1
IP_API_NEIGHBOR_FLAG_STATIC = 1
IP_API_NEIGHBOR_FLAG_NO_FIB_ENTRY = 2


def _path(ctx: Ctx, raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(retval, path) of one ``vl_api_fib_path_t``."""
    proto = int(raw["proto"])
    nh: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if proto == FIB_API_PATH_NH_PROTO_IP4:
        nh = ipaddress.IPv4Address(bytes(raw["nh"]["address"]["ip4"]))
    elif proto == FIB_API_PATH_NH_PROTO_IP6:
        nh = ipaddress.IPv6Address(bytes(raw["nh"]["address"]["ip6"]))
    sw_if_index, table_id = int(raw["sw_if_index"]), int(raw["table_id"])
    path: dict[str, Any] = {
        "sw_if_index": sw_if_index,
        "next_hop": nh,
        "table_id": table_id,
        "type": int(raw["type"]),
        "proto": proto,
        "flags": int(raw["flags"]),
        "weight": int(raw["weight"]) or 1,
        "preference": int(raw["preference"]),
    }
    if path["type"] == FIB_API_PATH_TYPE_NORMAL and nh is not None:
        if sw_if_index == NO_INDEX:
            if table_id not in ctx.model.tables[nh.version]:
                return Retval.NO_SUCH_FIB, path
        elif ctx.model.pool.is_free(sw_if_index):
            return Retval.NO_MATCHING_INTERFACE, path
    return 0, path


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("sw_if_index", "next_hop", "table_id", "type", "proto")
    return all(a[k] == b[k] for k in keys)


@handles("ip_route_add_del")
def ip_route_add_del(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "ip_route_add_del_reply"
    route = m["route"]
    addr, length = prefix(route["prefix"])
    table_id = int(route["table_id"])
    if table_id not in ctx.model.tables[addr.version]:
        return reply(name, Retval.NO_SUCH_FIB, stats_index=NO_INDEX)
    paths = []
    for raw in route["paths"]:
        rv, path = _path(ctx, raw)
        if rv:
            return reply(name, rv, stats_index=NO_INDEX)
        paths.append(path)
    if length > max_len(addr):
        return reply(name, Retval.INVALID_PREFIX_LENGTH, stats_index=NO_INDEX)
    key = (table_id, network(addr, length))
    entry = ctx.model.routes.get(key)
    if (m["is_multipath"] or m["is_add"]) and not paths:
        return reply(name, Retval.NO_PATHS_IN_ROUTE, stats_index=NO_INDEX)
    if not m["is_add"]:
        if entry is not None:
            if m["is_multipath"]:
                entry.paths = [p for p in entry.paths if not any(_same(p, q) for q in paths)]
            if not m["is_multipath"] or not entry.paths:
                del ctx.model.routes[key]
                ctx.model.route_pool.put(entry.stats_index)
        return reply(name, stats_index=NO_INDEX)
    if entry is None:
        entry = Route(table_id, key[1], [], ctx.model.route_pool.get())
        ctx.model.routes[key] = entry
    if m["is_multipath"]:
        entry.paths += [p for p in paths if not any(_same(p, q) for q in entry.paths)]
    else:
        entry.paths = paths
    return reply(name, stats_index=entry.stats_index)


@handles("ip_neighbor_add_del")
def ip_neighbor_add_del(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "ip_neighbor_add_del_reply"
    n = m["neighbor"]
    sw_if_index = int(n["sw_if_index"])
    if valid(ctx, sw_if_index) is None:
        return reply(name, Retval.INVALID_SW_IF_INDEX, stats_index=NO_INDEX)
    ip = address(n["ip_address"])
    hw = mac(n["mac_address"])
    static = bool(int(n["flags"]) & IP_API_NEIGHBOR_FLAG_STATIC)
    key = (sw_if_index, ip)
    entry = ctx.model.neighbors.get(key)
    if not m["is_add"]:
        if entry is None:
            return reply(name, Retval.NO_SUCH_ENTRY, stats_index=NO_INDEX)
        del ctx.model.neighbors[key]
        return reply(name, stats_index=NO_INDEX)
    if entry is None:
        no_fib = bool(int(n["flags"]) & IP_API_NEIGHBOR_FLAG_NO_FIB_ENTRY)
        ctx.model.neighbors[key] = Neighbor(sw_if_index, ip, hw, static, no_fib)
    elif not static and entry.static:
        # "Refuse to over-write static neighbor entry": ip_neighbor_add returns a bare -2
        return reply(name, 0 if entry.mac == hw else -2, stats_index=NO_INDEX)
    else:
        entry.static = entry.static or static
        entry.mac = hw
    # adj_nbr_find: the fake keeps no adjacencies, so there is no index to report
    return reply(name, stats_index=NO_INDEX)


@handles("ip_address_dump")
def ip_address_dump(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = valid(ctx, m["sw_if_index"])
    if iface is None:
        return []
    version = 6 if m["is_ipv6"] else 4
    return [
        ("ip_address_details", {"sw_if_index": iface.sw_if_index, "prefix": a})
        for a in iface.addresses
        if a.version == version
    ]
