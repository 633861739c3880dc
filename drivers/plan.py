"""Validate a cross-connect and turn it into a driver plan (pure: no I/O, no grpc).

``plan_from_xcon(xcon, mtu=..., egress_mtu=...)`` either returns a plan in the format of
:mod:`nsm_forwarder.drivers.base` or raises :class:`InvalidRequest` whose message names the
offending field, e.g. ``source.mechanism.parameters.name: 'eth/0' must not contain '/'``.
What it checks (spec §2.6, plus what the kernel would reject later):

- ``id``, ``payload``, ``source``, ``destination`` and each end's ``network_service`` are present;
- a path, when set, has ``index < len(path_segments)``;
- direction (spec §2.6, §5.3): a connection whose path has more than one segment is remote.
  Both ends local: a local cross-connect (``KERNEL_INTERFACE`` on both ends). Source local and
  destination remote: this node hosts the client (OUTGOING); source remote and destination
  local: this node hosts the endpoint (INCOMING). Both remote: refused;
- the local end of a remote cross-connect is ``KERNEL_INTERFACE``, the remote end ``VXLAN`` or
  ``WIREGUARD`` with its parameters (spec §3.2): ``src_ip``/``dst_ip`` IP addresses of one
  family, ``vni`` decimal in 1..16777215, WireGuard keys 32-byte base64, ports 1..65535;
- interface names are valid Linux names (1..15 bytes, no '/', ':' or whitespace, not '.'/'..');
- ``netnsInode`` is a decimal integer;
- addresses are ``addr/len``, route prefixes are CIDRs, neighbours have an IP and a MAC.

No message ever quotes a WireGuard key: the private ones are secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nsm_forwarder.drivers import plan_values as pv
from nsm_forwarder.drivers.errors import InvalidRequest
from nsm_forwarder.drivers.shapes import (
    KERNEL_INTERFACE,
    MEMIF,
    endpoint,
)
from nsm_forwarder.proto import connection_pb2, crossconnect_pb2

VXLAN = "VXLAN"
WIREGUARD = "WIREGUARD"
#: Where nsmd keeps the workspaces (NSM_BASEDIR's default); memif sockets live under it.
DEFAULT_BASE_DIR = "/var/lib/networkservicemesh"


@dataclass(frozen=True)
class Offer:
    """What the running driver builds: the mechanism types it offers (by class), and where
    memif sockets live (``NSM_BASEDIR``)."""

    driver: str = "kernel"
    local: tuple[str, ...] = (KERNEL_INTERFACE,)
    remote: tuple[str, ...] = (VXLAN, WIREGUARD)
    base_dir: str = DEFAULT_BASE_DIR


#: The kernel driver's offer (the default of :func:`plan_from_xcon`).
KERNEL_OFFER = Offer()
#: Plan kind of each remote mechanism.
REMOTE_KINDS = {VXLAN: "vxlan", WIREGUARD: "wireguard"}

#: Encapsulation overhead over an IPv4 / IPv6 underlay, in bytes: outer IP + UDP + VXLAN (8) +
#: inner Ethernet (14); outer IP + UDP + WireGuard data header (16) + auth tag (16).
OVERHEAD = {"vxlan": {4: 50, 6: 70}, "wireguard": {4: 60, 6: 80}}
#: MTU assumed for the underlay when the caller does not know the egress interface's.
DEFAULT_EGRESS_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65535

Plan = dict[str, Any]


def plan_from_xcon(
    xcon: crossconnect_pb2.CrossConnect,
    *,
    mtu: int,
    egress_mtu: int = DEFAULT_EGRESS_MTU,
    offer: Offer = KERNEL_OFFER,
) -> Plan:
    """Validate ``xcon`` and build the driver plan for it (see module docstring).

    ``mtu`` is the MTU of local veth pairs (config ``mtu``); a remote plan's MTU is instead
    ``egress_mtu`` (the MTU of the interface carrying ``NSM_FORWARDER_SRC_IP``, as found by the
    driver's ``init``) minus the encapsulation overhead. ``offer``: the mechanisms the driver
    builds; anything else is refused.
    """
    pv.xcon_id(xcon.id)
    if not xcon.payload:
        raise InvalidRequest("payload: must not be empty")
    for side in ("source", "destination"):
        if not xcon.HasField(side):
            raise InvalidRequest(f"{side}: must be set")
        _check_connection(side, getattr(xcon, side))
    src, dst = xcon.source, xcon.destination
    if is_remote(src) and is_remote(dst):
        raise InvalidRequest(
            "path: both source and destination are remote (more than one path segment); "
            "one end of a cross-connect must be on this node"
        )
    if is_remote(src) or is_remote(dst):
        return _remote_plan(xcon, egress_mtu, offer)
    ctx = _ip_context(src, dst)
    src_addr = pv.cidr("source.context.ip_context.src_ip_addr", ctx.src_ip_addr) if ctx else ""
    dst_addr = pv.cidr("destination.context.ip_context.dst_ip_addr", ctx.dst_ip_addr) if ctx else ""
    src_gw = src_addr.split("/")[0] if src_addr else ""
    dst_gw = dst_addr.split("/")[0] if dst_addr else ""
    plan_src = _end("source", src, offer)
    plan_dst = _end("destination", dst, offer)
    if MEMIF in (plan_src.get("mechanism"), plan_dst.get("mechanism")):
        if plan_src.get("mechanism") == plan_dst.get("mechanism") == MEMIF:
            if plan_src["socket"] == plan_dst["socket"]:
                raise InvalidRequest(
                    "mechanism.parameters.socketfile: both MEMIF ends name the same socket "
                    f"{plan_src['socket']!r}"
                )
    elif plan_src["inode"] == plan_dst["inode"] and plan_src["name"] == plan_dst["name"]:
        raise InvalidRequest(
            "mechanism.parameters.name: both ends are in the same network namespace "
            f"and ask for the same interface name {plan_src['name']!r}"
        )
    src_routes = pv.routes("src_routes", ctx.src_routes, dst_addr, src_gw) if ctx else []
    dst_routes = pv.routes("dst_routes", ctx.dst_routes, src_addr, dst_gw) if ctx else []
    neighbors = pv.neighbors(ctx.ip_neighbors) if ctx else []
    # a MEMIF end is configured by its pod (the forwarder never terminates one)
    if plan_src.get("mechanism") != MEMIF:
        plan_src.update(addr=src_addr, routes=dst_routes, neighbors=neighbors)
    if plan_dst.get("mechanism") != MEMIF:
        plan_dst.update(addr=dst_addr, routes=src_routes)
    return {"id": xcon.id, "kind": "local", "mtu": mtu, "src": plan_src, "dst": plan_dst}


def _ip_context(*conns: connection_pb2.Connection) -> Any:
    """The ip_context to use: nsmd shares one between both ends; if only one end carries it,
    use that one (the first one given wins when both do)."""
    ctxs = [c.context.ip_context for c in conns if c.HasField("context")]
    for ctx in ctxs:
        if ctx.ByteSize():
            return ctx
    return ctxs[0] if ctxs else None


def _remote_plan(xcon: crossconnect_pb2.CrossConnect, egress_mtu: int, offer: Offer) -> Plan:
    """The plan of a cross-connect with exactly one end on this node (spec §5.3).

    Plan format (see :mod:`nsm_forwarder.drivers.base`)::

        {"id", "kind": "vxlan" | "wireguard", "mtu": int,
         "direction": "outgoing" | "incoming", "side": "src" | "dst",   # the local end
         "local": End,                                               # the pod end
         "tunnel": {"local_ip", "remote_ip", "vni"}                  # vxlan
                 | {"local_ip", "remote_ip", "listen_port", "remote_port",
                    "private_key", "peer_public_key"}}               # wireguard (base64 keys)
    """
    outgoing = not is_remote(xcon.source)
    if outgoing:  # this node hosts the client: the source is local
        direction, side = "outgoing", "src"
        local_field, remote_field = "source", "destination"
        local, remote = xcon.source, xcon.destination
    else:  # this node hosts the endpoint: the destination is local
        direction, side = "incoming", "dst"
        local_field, remote_field = "destination", "source"
        local, remote = xcon.destination, xcon.source
    mech = remote.mechanism
    if mech.type not in offer.remote:
        raise InvalidRequest(
            f"{remote_field}.mechanism.type: {mech.type!r} is not supported for the remote end "
            f"(its path has more than one segment) by the {offer.driver} driver "
            f"(remote: {', '.join(offer.remote)})"
        )
    kind = REMOTE_KINDS[mech.type]
    where = f"{remote_field}.mechanism.parameters"
    params = mech.parameters
    src_ip = pv.underlay_ip(f"{where}.src_ip", params.get("src_ip", ""))
    dst_ip = pv.underlay_ip(f"{where}.dst_ip", params.get("dst_ip", ""))
    if src_ip.version != dst_ip.version:
        raise InvalidRequest(
            f"{where}: src_ip {src_ip} and dst_ip {dst_ip} are not of the same IP family"
        )
    local_ip, remote_ip = (src_ip, dst_ip) if outgoing else (dst_ip, src_ip)
    tunnel: dict[str, Any] = {"local_ip": str(local_ip), "remote_ip": str(remote_ip)}
    if kind == "vxlan":
        tunnel["vni"] = pv.vni(f"{where}.vni", params.get("vni", ""))
    else:
        for key in ("src_public_key", "src_private_key", "dst_public_key", "dst_private_key"):
            if key in params:
                pv.wg_key(f"{where}.{key}", params[key])
        for key in ("src_port", "dst_port"):
            if key in params:
                pv.port(f"{where}.{key}", params[key])
        mine, theirs = ("src", "dst") if outgoing else ("dst", "src")
        tunnel.update(
            listen_port=pv.port(f"{where}.{mine}_port", params.get(f"{mine}_port", "")),
            remote_port=pv.port(f"{where}.{theirs}_port", params.get(f"{theirs}_port", "")),
            private_key=pv.wg_key(
                f"{where}.{mine}_private_key", params.get(f"{mine}_private_key", "")
            ),
            peer_public_key=pv.wg_key(
                f"{where}.{theirs}_public_key", params.get(f"{theirs}_public_key", "")
            ),
        )

    end = _end(local_field, local, offer)
    ctx = _ip_context(local, remote)
    if ctx is not None and end.get("mechanism") != MEMIF:
        src_addr = pv.cidr(f"{local_field}.context.ip_context.src_ip_addr", ctx.src_ip_addr)
        dst_addr = pv.cidr(f"{local_field}.context.ip_context.dst_ip_addr", ctx.dst_ip_addr)
        if outgoing:  # the client's end: src address, dst_routes via the endpoint's address
            end["addr"] = src_addr
            end["routes"] = pv.routes("dst_routes", ctx.dst_routes, src_addr, pv.host(dst_addr))
            pv.routes("src_routes", ctx.src_routes, "", "")  # validated, applied by the peer
            neighbors = pv.neighbors(ctx.ip_neighbors)
        else:  # the endpoint's end: dst address, src_routes via the client's address
            end["addr"] = dst_addr
            end["routes"] = pv.routes("src_routes", ctx.src_routes, dst_addr, pv.host(src_addr))
            pv.routes("dst_routes", ctx.dst_routes, "", "")
            pv.neighbors(ctx.ip_neighbors)  # validated; as for local ones: client side only
            neighbors = []
        # A WireGuard device is layer 3 (no ARP, no link-layer address): neighbour entries
        # make no sense on it and are left out.
        end["neighbors"] = neighbors if kind == "vxlan" else []
    overhead = OVERHEAD[kind][local_ip.version]
    return {
        "id": xcon.id,
        "kind": kind,
        "mtu": max(MIN_MTU, min(MAX_MTU, egress_mtu - overhead)),
        "direction": direction,
        "side": side,
        "local": end,
        "tunnel": tunnel,
    }


def describe(plan: Plan) -> str:
    """One short human description of a plan, for the INFO line of a Request or Close.

    Never includes a key."""
    kind = plan.get("kind")
    if kind == "local":
        return f"{kind} {_where(plan['src'])} <-> {_where(plan['dst'])}"
    end, tunnel = plan["local"], plan["tunnel"]
    head = f"{kind} {plan['direction']} {_where(end)}"
    if kind == "vxlan":
        return f"{head} vni {tunnel['vni']} {tunnel['local_ip']} -> {tunnel['remote_ip']}"
    local = endpoint(tunnel["local_ip"], tunnel["listen_port"])
    remote = endpoint(tunnel["remote_ip"], tunnel["remote_port"])
    return f"{head} {local} -> {remote}"


def _where(end: dict[str, Any]) -> str:
    if end.get("mechanism") == MEMIF:
        return f"memif:{end['socket']}"
    return f"{end['name']}@{end['inode']}"


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


def _end(side: str, conn: connection_pb2.Connection, offer: Offer) -> dict[str, Any]:
    mech = conn.mechanism
    if mech.type not in offer.local:
        raise InvalidRequest(
            f"{side}.mechanism.type: {mech.type!r} is not supported by the {offer.driver} "
            f"driver (local: {', '.join(offer.local)})"
        )
    params = mech.parameters
    if mech.type == MEMIF:
        inode_text = params.get("netnsInode", "")
        field = f"{side}.mechanism.parameters.netnsInode"
        return {
            "mechanism": MEMIF,
            "inode": pv.netns_inode(field, inode_text) if inode_text else 0,
            "socket": pv.memif_socket(side, params, offer.base_dir),
            "name": "",
            "addr": "",
            "routes": [],
            "neighbors": [],
        }
    name = params.get("name", "")
    pv.check_ifname(f"{side}.mechanism.parameters.name", name)
    inode = pv.netns_inode(f"{side}.mechanism.parameters.netnsInode", params.get("netnsInode", ""))
    # a kernel end carries no "mechanism" key: plans written before MEMIF existed look the same
    return {
        "inode": inode,
        "name": name,
        "addr": "",
        "routes": [],
        "neighbors": [],
    }
