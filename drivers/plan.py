"""Validate a cross-connect and turn it into a driver plan (pure: no I/O, no grpc).

``plan_from_xcon(xcon, mtu)`` either returns a plan in the format of
:mod:`nsm_forwarder.drivers.base` or raises :class:`InvalidRequest` whose message names the
offending field, e.g. ``source.mechanism.parameters.name: 'eth/0' must not contain '/'``.
What it checks (spec §2.6, plus what the kernel would reject later):

- ``id``, ``payload``, ``source``, ``destination`` and each end's ``network_service`` are present;
- a path, when set, has ``index < len(path_segments)``;
- both ends are local (a path of at most one segment) ``KERNEL_INTERFACE`` mechanisms;
- interface names are valid Linux names (1..15 bytes, no '/', ':' or whitespace, not '.'/'..');
- ``netnsInode`` is a decimal integer;
- addresses are ``addr/len``, route prefixes are CIDRs, neighbours have an IP and a MAC.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from nsm_forwarder.drivers.errors import InvalidRequest
from nsm_forwarder.proto import connection_pb2, crossconnect_pb2

KERNEL_INTERFACE = "KERNEL_INTERFACE"
VXLAN = "VXLAN"
#: Mechanism types this forwarder can build, by class.
LOCAL_MECHANISMS = (KERNEL_INTERFACE,)
REMOTE_MECHANISMS = (VXLAN,)

IFNAMSIZ = 16
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

Plan = dict[str, Any]


def plan_from_xcon(xcon: crossconnect_pb2.CrossConnect, *, mtu: int) -> Plan:
    """Validate ``xcon`` and build the driver plan for it (see module docstring)."""
    if not xcon.id:
        raise InvalidRequest("id: must not be empty")
    if not xcon.payload:
        raise InvalidRequest("payload: must not be empty")
    for side in ("source", "destination"):
        if not xcon.HasField(side):
            raise InvalidRequest(f"{side}: must be set")
        _check_connection(side, getattr(xcon, side))
    src, dst = xcon.source, xcon.destination
    if is_remote(src) or is_remote(dst):
        raise InvalidRequest(
            "path: remote cross-connects (a path with more than one segment) are not supported "
            "by the kernel driver yet; only local KERNEL_INTERFACE <-> KERNEL_INTERFACE"
        )
    ip = src.context.ip_context if src.HasField("context") else None
    dst_ip = dst.context.ip_context if dst.HasField("context") else None
    # nsmd shares one ip_context between both ends; if only one end carries it, use that one.
    ctx = ip if ip is not None and ip.ByteSize() else (dst_ip if dst_ip is not None else ip)
    src_addr = _cidr("source.context.ip_context.src_ip_addr", ctx.src_ip_addr) if ctx else ""
    dst_addr = _cidr("destination.context.ip_context.dst_ip_addr", ctx.dst_ip_addr) if ctx else ""
    src_gw = src_addr.split("/")[0] if src_addr else ""
    dst_gw = dst_addr.split("/")[0] if dst_addr else ""
    plan_src = _end("source", src)
    plan_dst = _end("destination", dst)
    if plan_src["inode"] == plan_dst["inode"] and plan_src["name"] == plan_dst["name"]:
        raise InvalidRequest(
            "mechanism.parameters.name: both ends are in the same network namespace "
            f"and ask for the same interface name {plan_src['name']!r}"
        )
    plan_src["addr"] = src_addr
    plan_dst["addr"] = dst_addr
    if ctx is not None:
        plan_src["routes"] = _routes("dst_routes", ctx.dst_routes, src_addr, dst_gw)
        plan_dst["routes"] = _routes("src_routes", ctx.src_routes, dst_addr, src_gw)
        plan_src["neighbors"] = _neighbors(ctx.ip_neighbors)
    return {"id": xcon.id, "kind": "local", "mtu": mtu, "src": plan_src, "dst": plan_dst}


def describe(plan: Plan) -> str:
    """One short human description of a plan, for the INFO line of a Request or Close."""
    src, dst = plan["src"], plan["dst"]
    return f"{plan['kind']} {src['name']}@{src['inode']} <-> {dst['name']}@{dst['inode']}"


def is_remote(conn: connection_pb2.Connection) -> bool:
    """True when the connection crosses nodes (spec §2.6: more than one path segment)."""
    return len(conn.path.path_segments) > 1


def _check_connection(side: str, conn: connection_pb2.Connection) -> None:
    if not conn.network_service:
        raise InvalidRequest(f"{side}.network_service: must not be empty")
    if conn.HasField("path") and conn.path.path_segments:
        if conn.path.index >= len(conn.path.path_segments):
            raise InvalidRequest(
                f"{side}.path.index: {conn.path.index} is out of range for "
                f"{len(conn.path.path_segments)} path segments"
            )
    if not conn.HasField("mechanism"):
        raise InvalidRequest(f"{side}.mechanism: must be set")


def _end(side: str, conn: connection_pb2.Connection) -> dict[str, Any]:
    mech = conn.mechanism
    if mech.type not in LOCAL_MECHANISMS:
        raise InvalidRequest(
            f"{side}.mechanism.type: {mech.type!r} is not supported by the kernel driver "
            f"(local: {', '.join(LOCAL_MECHANISMS)})"
        )
    params = mech.parameters
    name = params.get("name", "")
    check_ifname(f"{side}.mechanism.parameters.name", name)
    inode_text = params.get("netnsInode", "")
    if not inode_text.isdigit() or int(inode_text) <= 0:
        raise InvalidRequest(
            f"{side}.mechanism.parameters.netnsInode: must be a decimal inode number, "
            f"got {inode_text!r}"
        )
    return {"inode": int(inode_text), "name": name, "addr": "", "routes": [], "neighbors": []}


def check_ifname(field: str, name: str) -> None:
    """Raise InvalidRequest unless ``name`` is a valid Linux interface name."""
    if not name:
        raise InvalidRequest(f"{field}: must not be empty")
    size = len(name.encode())
    if size >= IFNAMSIZ:
        raise InvalidRequest(f"{field}: {name!r} is {size} bytes, the limit is {IFNAMSIZ - 1}")
    if name in (".", "..") or "/" in name or ":" in name or any(c.isspace() for c in name):
        raise InvalidRequest(
            f"{field}: {name!r} is not a valid interface name (no '/', ':' or spaces)"
        )


def _cidr(field: str, text: str) -> str:
    if not text:
        return ""
    if "/" not in text:
        raise InvalidRequest(f"{field}: {text!r} must be in addr/len form")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidRequest(f"{field}: {text!r} is not a valid addr/len") from None
    return f"{iface.ip}/{iface.network.prefixlen}"


def _routes(field: str, routes: Any, local: str, gateway: str) -> list[dict[str, str]]:
    """Routes via the peer's address when it is on the local subnet, else on-link routes."""
    if gateway and not (
        local and ipaddress.ip_address(gateway) in ipaddress.ip_interface(local).network
    ):
        gateway = ""
    out = []
    for i, route in enumerate(routes):
        name = f"ip_context.{field}[{i}].prefix"
        if not route.prefix:
            raise InvalidRequest(f"{name}: must not be empty")
        try:
            net = ipaddress.ip_network(route.prefix, strict=False)
        except ValueError:
            raise InvalidRequest(f"{name}: {route.prefix!r} is not a valid CIDR") from None
        gw = gateway if gateway and ipaddress.ip_address(gateway).version == net.version else ""
        out.append({"prefix": str(net), "gateway": gw})
    return out


def _neighbors(neighbors: Any) -> list[dict[str, str]]:
    out = []
    for i, n in enumerate(neighbors):
        name = f"ip_context.ip_neighbors[{i}]"
        try:
            ip = str(ipaddress.ip_address(n.ip))
        except ValueError:
            raise InvalidRequest(f"{name}.ip: {n.ip!r} is not an IP address") from None
        if not _MAC.match(n.hardware_address):
            raise InvalidRequest(
                f"{name}.hardware_address: {n.hardware_address!r} is not a MAC address"
            )
        out.append({"ip": ip, "mac": n.hardware_address.lower()})
    return out
