"""A small rtnetlink client for the hot path: the few messages a local cross-connect needs.

pyroute2 costs about 0.5 ms of Python per request (encoding, its asyncio round trip, parsing
the answer); the kernel's own work for most of these messages is 0.05-0.15 ms. :class:`Rtnl`
packs each request with :mod:`struct` and waits for its acknowledgement on a plain netlink
socket, one request at a time. Errors are raised as pyroute2's ``NetlinkError`` (the errno in
``code``), like every other netlink step of the drivers, so error mapping stays one piece.

Messages: a veth pair across two namespaces with both ifindexes chosen by the caller (no look-up
afterwards), a link by ifindex, setting a link's alias / up state / group, deleting a link or a
whole group, adding and deleting an address, a route and a permanent neighbour.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

from nsm_forwarder.drivers.linux.links import Link
from nsm_forwarder.drivers.linux.pyroute import NetlinkError
from nsm_forwarder.drivers.shapes import IPInterface, Neighbor, Route, family

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 18, 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_IFALIAS = 3, 4, 18, 20
IFLA_STATS64, IFLA_GROUP, IFLA_NET_NS_FD = 23, 27, 28
#: the first fields of struct rtnl_link_stats64
STATS64 = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors")
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 254, 3, 0, 253, 1
NLA_F_NESTED = 0x8000
_HEADER = struct.Struct("IHHII")


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("HH", size, kind) + payload + b"\0" * (-size % 4)


def _text(value: str) -> bytes:
    return value.encode() + b"\0"


def _u32(value: int) -> bytes:
    return struct.pack("I", value)


def _ifinfo(index: int, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _attrs(msg: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the top-level attributes of an RTM_NEWLINK message."""
    offset = _HEADER.size + 16
    while offset + 4 <= len(msg):
        size, kind = struct.unpack_from("HH", msg, offset)
        if size < 4:
            return
        yield kind & ~NLA_F_NESTED, msg[offset + 4 : offset + size]
        offset += size + (-size % 4)


def _parse_link(msg: bytes) -> Link:
    (index,) = struct.unpack_from("i", msg, _HEADER.size + 4)
    name, alias, group = "", None, 0
    for kind, payload in _attrs(msg):
        if kind == IFLA_IFNAME:
            name = payload.rstrip(b"\0").decode()
        elif kind == IFLA_IFALIAS:
            alias = payload.rstrip(b"\0").decode() or None
        elif kind == IFLA_GROUP:
            (group,) = struct.unpack_from("I", payload)
    return Link(index=index, name=name, alias=alias, group=group)


class Rtnl:
    """Requests on one NETLINK_ROUTE socket (in the namespace it was made in)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request and wait for its acknowledgement; NetlinkError if refused."""
        self._exchange(kind, flags | NLM_F_ACK, body, None)

    def _exchange(self, kind: int, flags: int, body: bytes, want: int | None) -> bytes | None:
        """Send one request; the answer of type ``want`` to it, or None for its
        acknowledgement (``want`` None); NetlinkError when the kernel refused it."""
        self.seq += 1
        seq = self.seq
        header = _HEADER.pack(_HEADER.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, rtype, _, rseq, _ = _HEADER.unpack_from(data, offset)
                if rseq == seq and rtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("i", data, offset + _HEADER.size)
                    if code:
                        raise NetlinkError(-code)
                    return None
                if rseq == seq and rtype == want:
                    return data[offset : offset + length]
                offset += max(length, _HEADER.size) + (-length % 4)

    # -- links -----------------------------------------------------------------------------

    def new_veth(
        self,
        name: str,
        index: int,
        peer_name: str,
        peer_index: int,
        peer_netns: int,
        *,
        mtu: int = 0,
        group: int = 0,
    ) -> None:
        """A veth pair: ``name`` (up) here, ``peer_name`` (down: a peer cannot be brought up
        before the pair exists) in namespace fd ``peer_netns``, with the given ifindexes."""
        common = (_attr(IFLA_MTU, _u32(mtu)) if mtu else b"") + (
            _attr(IFLA_GROUP, _u32(group)) if group else b""
        )
        peer = (
            _ifinfo(peer_index)
            + _attr(IFLA_IFNAME, _text(peer_name))
            + _attr(IFLA_NET_NS_FD, _u32(peer_netns))
            + common
        )
        info = _attr(IFLA_INFO_KIND, _text("veth")) + _attr(
            IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer)
        )
        body = (
            _ifinfo(index, IFF_UP, IFF_UP)
            + _attr(IFLA_IFNAME, _text(name))
            + common
            + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        )
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_link(
        self, index: int, *, alias: str | None = None, up: bool = False, group: int | None = None
    ) -> None:
        body = _ifinfo(index, IFF_UP if up else 0, IFF_UP if up else 0)
        if alias is not None:
            body += _attr(IFLA_IFALIAS, alias.encode())
        if group is not None:
            body += _attr(IFLA_GROUP, _u32(group))
        self.request(RTM_NEWLINK, 0, body)

    def del_link(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, _ifinfo(index))

    def del_group(self, group: int) -> None:
        """Delete every interface of ``group`` in this namespace, in one kernel operation (one
        wait for the kernel's unregister, however many there are)."""
        self.request(RTM_DELLINK, 0, _ifinfo(0) + _attr(IFLA_GROUP, _u32(group)))

    def get_link(self, index: int) -> Link | None:
        """The interface with this ifindex (its name, alias, group), None if there is none."""
        msg = self._get(_ifinfo(index))
        return None if msg is None else _parse_link(msg)

    def link_stats(self, name: str) -> dict[str, int] | None:
        """The IFLA_STATS64 counters of interface ``name``, None if there is no such one."""
        msg = self._get(_ifinfo(0) + _attr(IFLA_IFNAME, _text(name)))
        if msg is None:
            return None
        for kind, payload in _attrs(msg):
            if kind == IFLA_STATS64:
                values = struct.unpack_from(f"{len(STATS64)}Q", payload)
                return dict(zip(STATS64, values, strict=True))
        return None

    def _get(self, body: bytes) -> bytes | None:
        """The RTM_NEWLINK answering an RTM_GETLINK for ``body``; None if there is none."""
        try:
            return self._exchange(RTM_GETLINK, 0, body, RTM_NEWLINK)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    # -- addresses, routes, neighbours -----------------------------------------------------

    def address(self, index: int, addr: IPInterface, *, add: bool = True) -> None:
        raw = addr.ip.packed
        flags = IFA_F_NODAD if addr.version == 6 else 0
        ifa = struct.pack("BBBBI", family(addr.version), addr.network.prefixlen, flags, 0, index)
        body = ifa + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        if flags:
            body += _attr(IFA_FLAGS, _u32(flags))
        if add:
            self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)
        else:
            self.request(RTM_DELADDR, 0, body)

    def route(self, index: int, route: Route, *, add: bool = True) -> None:
        net = route.net
        scope = RT_SCOPE_LINK if route.gateway is None and net.version == 4 else RT_SCOPE_UNIVERSE
        rtm = struct.pack(
            "BBBBBBBBI",
            family(net.version),
            net.prefixlen,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            scope,
            RTN_UNICAST,
            0,
        )
        body = rtm + _attr(RTA_DST, net.network_address.packed) + _attr(RTA_OIF, _u32(index))
        if route.gateway is not None:
            body += _attr(RTA_GATEWAY, route.gateway.packed)
        if add:
            self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)
        else:
            self.request(RTM_DELROUTE, 0, body)

    def neighbor(self, index: int, neigh: Neighbor, *, add: bool = True) -> None:
        """A permanent entry (added over whatever the kernel may have learnt already)."""
        ndm = struct.pack("BxxxiHBB", family(neigh.ip.version), index, NUD_PERMANENT, 0, 0)
        body = ndm + _attr(NDA_DST, neigh.ip.packed)
        if add:
            mac = bytes.fromhex(neigh.mac.replace(":", ""))
            self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body + _attr(NDA_LLADDR, mac))
        else:
            self.request(RTM_DELNEIGH, 0, body)
