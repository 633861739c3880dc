"""Plans as the kernel driver sees them: shape checks and parsing into typed values.

The plan builder (:mod:`nsm_forwarder.drivers.plan`) validates requests; this module only makes
sure a plan handed to the driver has the expected shape (it may come from the Store, written by
an older version) and turns it into dataclasses. Keys are never part of a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from nsm_forwarder.drivers.base import Plan
from nsm_forwarder.drivers.errors import InvalidRequest

IFNAMSIZ = 16
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
SIDES = ("src", "dst")
#: Plan kinds of remote cross-connects (one end here, a tunnel to another node).
REMOTE_KINDS = ("vxlan", "wireguard")
#: The local end of a remote cross-connect, by direction (spec §5.3).
SIDE_OF = {"outgoing": "src", "incoming": "dst"}
MAX_VNI = 2**24 - 1

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Route:
    net: IPNetwork
    gateway: IPAddress | None


@dataclass(frozen=True)
class Neighbor:
    ip: IPAddress
    mac: str


@dataclass(frozen=True)
class End:
    side: str
    inode: int
    name: str
    addr: IPInterface | None
    routes: tuple[Route, ...]
    neighbors: tuple[Neighbor, ...]


@dataclass(frozen=True)
class VxlanTunnel:
    local_ip: IPAddress
    remote_ip: IPAddress
    vni: int


@dataclass(frozen=True)
class WireguardTunnel:
    local_ip: IPAddress
    remote_ip: IPAddress
    listen_port: int
    remote_port: int
    #: base64; never printed (``repr=False``)
    private_key: str = field(repr=False)
    peer_public_key: str = field(repr=False)


@dataclass(frozen=True)
class RemotePlan:
    """One end of a cross-connect on this node, joined to another node by a tunnel."""

    id: str
    kind: str  # "vxlan" | "wireguard"
    mtu: int
    side: str  # "src" (OUTGOING: the client is here) | "dst" (INCOMING: the endpoint is here)
    end: End
    tunnel: VxlanTunnel | WireguardTunnel


def family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def check_name(name: Any, where: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode()) >= IFNAMSIZ
        or name in (".", "..")
        or any(c in name for c in "/:")
        or any(c.isspace() for c in name)
    ):
        raise InvalidRequest(f"{where}: invalid interface name {name!r}")
    return name


def check_inode(inode: Any, where: str) -> int:
    if isinstance(inode, bool) or not isinstance(inode, int) or inode <= 0:
        raise InvalidRequest(f"{where}: invalid netns inode {inode!r}")
    return inode


def check_id(xid: Any) -> str:
    if not isinstance(xid, str) or not xid:
        raise InvalidRequest(f"invalid cross-connect id {xid!r}")
    return xid


def check_mtu(mtu: Any) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or mtu < 0:
        raise InvalidRequest(f"invalid mtu {mtu!r}")
    return mtu


def parse_end(raw: Any, side: str) -> End:
    where = f"{side} end"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} missing or not a mapping")
    inode = check_inode(raw.get("inode"), where)
    name = check_name(raw.get("name"), where)
    try:
        addr_s = raw.get("addr") or ""
        addr = ipaddress.ip_interface(addr_s) if addr_s else None
        routes: list[Route] = []
        for r in raw.get("routes") or ():
            net = ipaddress.ip_network(r["prefix"], strict=False)
            gw_s = r.get("gateway") or ""
            gw = ipaddress.ip_address(gw_s) if gw_s else None
            if gw is not None and gw.version != net.version:
                raise ValueError(f"gateway {gw} is not of the family of {net}")
            routes.append(Route(net, gw))
        neighbors: list[Neighbor] = []
        for n in raw.get("neighbors") or ():
            ip = ipaddress.ip_address(n["ip"])
            mac = n["mac"]
            if not isinstance(mac, str) or not _MAC.match(mac):
                raise ValueError(f"invalid MAC address {mac!r}")
            neighbors.append(Neighbor(ip, mac.lower()))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidRequest(f"{where}: {exc}") from exc
    return End(side, inode, name, addr, tuple(routes), tuple(neighbors))


def parse_local_plan(plan: Plan) -> tuple[str, int, End, End]:
    """(id, mtu, src, dst) of a local plan; :class:`InvalidRequest` if it is not one."""
    if not isinstance(plan, dict):
        raise InvalidRequest("plan is not a mapping")
    if plan.get("kind") != "local":
        raise InvalidRequest(f"kernel driver cannot apply a plan of kind {plan.get('kind')!r}")
    xid = check_id(plan.get("id"))
    mtu = check_mtu(plan.get("mtu") or 0)
    src = parse_end(plan.get("src"), "src")
    dst = parse_end(plan.get("dst"), "dst")
    if src.inode == dst.inode and src.name == dst.name:
        raise InvalidRequest(f"both ends are {src.name!r} in the same netns {src.inode}")
    return xid, mtu, src, dst


def remote_side(plan: Plan) -> str:
    """The tag side (``src``/``dst``) of the local end of a remote plan or applied record."""
    side = plan.get("side")
    if side not in SIDES:
        raise InvalidRequest(f"remote plan {plan.get('id')!r}: invalid side {side!r}")
    direction = plan.get("direction")
    if direction is not None and SIDE_OF.get(direction) != side:
        raise InvalidRequest(
            f"remote plan {plan.get('id')!r}: side {side!r} does not match direction {direction!r}"
        )
    return str(side)


def _ip(raw: Any, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(raw)
    except (ValueError, TypeError):
        raise InvalidRequest(f"tunnel {what}: {raw!r} is not an IP address") from None


def _int(raw: Any, what: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise InvalidRequest(f"tunnel {what}: {raw!r} is not an integer in {low}..{high}")
    return raw


def _key(raw: Any, what: str) -> str:
    """A base64 WireGuard key; the value is never part of the message."""
    try:
        ok = isinstance(raw, str) and len(base64.b64decode(raw, validate=True)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise InvalidRequest(f"tunnel {what}: not a 32-byte base64 WireGuard key (not shown)")
    return str(raw)


def parse_remote_plan(plan: Plan) -> RemotePlan:
    """The typed form of a ``vxlan`` / ``wireguard`` plan; :class:`InvalidRequest` if it is
    malformed."""
    if not isinstance(plan, dict):
        raise InvalidRequest("plan is not a mapping")
    kind = plan.get("kind")
    if kind not in REMOTE_KINDS:
        raise InvalidRequest(f"kernel driver cannot apply a plan of kind {kind!r}")
    xid = check_id(plan.get("id"))
    mtu = check_mtu(plan.get("mtu") or 0)
    side = remote_side(plan)
    end = parse_end(plan.get("local"), side)
    raw = plan.get("tunnel")
    if not isinstance(raw, dict):
        raise InvalidRequest(f"remote plan {xid}: tunnel missing or not a mapping")
    local_ip = _ip(raw.get("local_ip"), "local_ip")
    remote_ip = _ip(raw.get("remote_ip"), "remote_ip")
    if local_ip.version != remote_ip.version:
        raise InvalidRequest(f"remote plan {xid}: {local_ip} and {remote_ip} differ in family")
    tunnel: VxlanTunnel | WireguardTunnel
    if kind == "vxlan":
        tunnel = VxlanTunnel(local_ip, remote_ip, _int(raw.get("vni"), "vni", 1, MAX_VNI))
    else:
        tunnel = WireguardTunnel(
            local_ip,
            remote_ip,
            _int(raw.get("listen_port"), "listen_port", 1, 65535),
            _int(raw.get("remote_port"), "remote_port", 1, 65535),
            _key(raw.get("private_key"), "private_key"),
            _key(raw.get("peer_public_key"), "peer_public_key"),
        )
    return RemotePlan(xid, str(kind), mtu, side, end, tunnel)
