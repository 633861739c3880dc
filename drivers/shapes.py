"""Typed plans: what a driver parses a plan dict into, once, at its door.

The plan builder (:mod:`nsm_forwarder.drivers.plan`) validates requests and writes plan dicts
(they travel to worker processes as msgpack and are kept in the Store). A driver's ``apply`` and
``remove`` turn the dict into these dataclasses with :func:`parse_plan` (it may come from the
Store, written by an older version, so its shape is checked again) and build from the typed
values only. Keys are never part of a message or a repr.
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
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
SIDES = ("src", "dst")
KERNEL_INTERFACE = "KERNEL_INTERFACE"
MEMIF = "MEMIF"
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
class MemifEnd:
    """A MEMIF end: a shared-memory interface whose socket the pod and the data plane share.
    The forwarder is master on the source (client) side, slave on the destination side."""

    side: str
    inode: int  # 0 when the request named none (only used for pod liveness)
    socket: str  # absolute path: <NSM_BASEDIR>/<workspace>/<socketfile>

    @property
    def master(self) -> bool:
        return self.side == "src"


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
class LocalPlan:
    """Both ends of a cross-connect in pods of this node."""

    id: str
    mtu: int
    src: End | MemifEnd
    dst: End | MemifEnd


@dataclass(frozen=True)
class RemotePlan:
    """One end of a cross-connect on this node, joined to another node by a tunnel."""

    id: str
    kind: str  # "vxlan" | "wireguard"
    mtu: int
    side: str  # "src" (OUTGOING: the client is here) | "dst" (INCOMING: the endpoint is here)
    end: End | MemifEnd
    tunnel: VxlanTunnel | WireguardTunnel


def endpoint(ip: str, port: int) -> str:
    """``ip:port``, the IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


#: What an interface name we create may not contain, besides non-printable or non-ASCII
#: characters: the kernel refuses '/', ':' and white space, and expands '%d' to a number (the
#: interface would not get the name asked for).
IFNAME_FORBIDDEN = "/:% "


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be the name of an interface we create; None when it can be."""
    if not name:
        return "must not be empty"
    size = len(name.encode())
    if size >= IFNAMSIZ:
        return f"is {size} bytes, the limit is {IFNAMSIZ - 1}"
    if name in (".", "..") or not (name.isascii() and name.isprintable()):
        return "must be printable ASCII, not '.' or '..'"
    if any(c in IFNAME_FORBIDDEN for c in name):
        return "must not contain '/', ':', '%' or spaces"
    return None


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or ifname_problem(name) is not None:
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


def parse_end(raw: Any, side: str, mechanisms: tuple[str, ...] = (KERNEL_INTERFACE,)) -> Any:
    """The :class:`End` (or, where ``mechanisms`` allow it, :class:`MemifEnd`) of a plan."""
    where = f"{side} end"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} missing or not a mapping")
    mechanism = raw.get("mechanism") or KERNEL_INTERFACE
    if mechanism not in mechanisms:
        raise InvalidRequest(f"{where}: this driver cannot build a {mechanism!r} end")
    if mechanism == MEMIF:
        return _memif_end(raw, side)
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
            if not isinstance(mac, str) or not MAC_RE.match(mac):
                raise ValueError(f"invalid MAC address {mac!r}")
            neighbors.append(Neighbor(ip, mac.lower()))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidRequest(f"{where}: {exc}") from exc
    return End(side, inode, name, addr, tuple(routes), tuple(neighbors))


def kernel_end(end: End | MemifEnd) -> End:
    """``end`` as a kernel-interface end; :class:`InvalidRequest` for any other kind."""
    if not isinstance(end, End):
        raise InvalidRequest(f"{end.side} end: a kernel-interface end was expected")
    return end


def _memif_end(raw: dict[str, Any], side: str) -> MemifEnd:
    inode = raw.get("inode") or 0
    socket_path = raw.get("socket")
    if isinstance(inode, bool) or not isinstance(inode, int) or inode < 0:
        raise InvalidRequest(f"{side} end: invalid netns inode {inode!r}")
    if not isinstance(socket_path, str) or not socket_path.startswith("/") or "\0" in socket_path:
        raise InvalidRequest(f"{side} end: invalid memif socket path {socket_path!r}")
    return MemifEnd(side, inode, socket_path)


def parse_local_plan(plan: Plan, mechanisms: tuple[str, ...] = (KERNEL_INTERFACE,)) -> LocalPlan:
    """The typed form of a ``local`` plan; :class:`InvalidRequest` if it is not one."""
    xid = check_id(plan.get("id"))
    mtu = check_mtu(plan.get("mtu") or 0)
    src = parse_end(plan.get("src"), "src", mechanisms)
    dst = parse_end(plan.get("dst"), "dst", mechanisms)
    if (
        isinstance(src, End)
        and isinstance(dst, End)
        and src.inode == dst.inode
        and src.name == dst.name
    ):
        raise InvalidRequest(f"both ends are {src.name!r} in the same netns {src.inode}")
    return LocalPlan(xid, mtu, src, dst)


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


def parse_remote_plan(plan: Plan, mechanisms: tuple[str, ...] = (KERNEL_INTERFACE,)) -> RemotePlan:
    """The typed form of a ``vxlan`` / ``wireguard`` plan; :class:`InvalidRequest` if it is
    malformed."""
    kind = plan.get("kind")
    xid = check_id(plan.get("id"))
    mtu = check_mtu(plan.get("mtu") or 0)
    side = remote_side(plan)
    end = parse_end(plan.get("local"), side, mechanisms)
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


def parse_plan(
    plan: Any,
    kinds: tuple[str, ...] = ("local", *REMOTE_KINDS),
    mechanisms: tuple[str, ...] = (KERNEL_INTERFACE,),
) -> LocalPlan | RemotePlan:
    """The typed form (:class:`LocalPlan` or :class:`RemotePlan`) of a plan dict whose kind is
    one of ``kinds`` and whose pod ends are of ``mechanisms`` (what the calling driver
    builds); :class:`InvalidRequest` otherwise."""
    if not isinstance(plan, dict):
        raise InvalidRequest("plan is not a mapping")
    kind = plan.get("kind")
    if kind not in kinds:
        raise InvalidRequest(f"cannot apply a plan of kind {kind!r} (known: {', '.join(kinds)})")
    if kind == "local":
        return parse_local_plan(plan, mechanisms)
    return parse_remote_plan(plan, mechanisms)
