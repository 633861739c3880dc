"""The kernel's floor for a local cross-connect, measured in the benchmark's own run.

:class:`RawNetlink` is a minimal direct netlink client (one process, no gRPC, no actors, no
pyroute2): struct-packed messages on one socket per namespace, opened once. A cross-connect is
four messages - the veth pair with both ends' ifindexes chosen, its source end up and its MTU
(RTM_NEWLINK across the namespaces), the two addresses (RTM_NEWADDR) and the peer up - and its
removal one RTM_DELLINK. :func:`ip_batch` does the same work with ``ip -batch`` (three ``ip``
processes for the whole set).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import time
from contextlib import ExitStack

from nsm_forwarder.drivers.linux import netns

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR = 16, 17, 20
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_LOCAL, IFA_ADDRESS = 2, 1
IFF_UP = 1
NLA_F_NESTED = 0x8000


def attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def ifinfo(index: int, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


class RawNetlink:
    """One NETLINK_ROUTE socket per namespace fd, requests acknowledged one at a time."""

    def __init__(self) -> None:
        self.seq = 0
        self.sockets: dict[int, socket.socket] = {}

    def sock(self, ns_fd: int) -> socket.socket:
        if ns_fd not in self.sockets:
            self.sockets[ns_fd] = netns.netlink_socket(ns_fd)
        return self.sockets[ns_fd]

    def request(self, ns_fd: int, kind: int, flags: int, body: bytes) -> None:
        self.seq += 1
        header = struct.pack(
            "IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0
        )
        s = self.sock(ns_fd)
        s.send(header + body)
        reply = s.recv(65536)
        length, rtype = struct.unpack_from("IH", reply)
        if rtype == NLMSG_ERROR:
            (code,) = struct.unpack_from("i", reply, 16)
            if code:
                raise OSError(-code, f"netlink: {os.strerror(-code)}")

    def create(self, fd_a: int, fd_b: int, i: int, index: tuple[int, int], mtu: int) -> None:
        peer = (
            ifinfo(index[1])
            + attr(IFLA_IFNAME, cstr(f"c{i}"))
            + attr(IFLA_NET_NS_FD, struct.pack("I", fd_b))
        )
        info = attr(IFLA_INFO_KIND, cstr("veth")) + attr(
            IFLA_INFO_DATA | NLA_F_NESTED, attr(VETH_INFO_PEER | NLA_F_NESTED, peer)
        )
        body = (
            ifinfo(index[0], IFF_UP, IFF_UP)
            + attr(IFLA_IFNAME, cstr(f"b{i}"))
            + attr(IFLA_MTU, struct.pack("I", mtu))
            + attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        )
        self.request(fd_a, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)
        for fd, ifindex, last in ((fd_a, index[0], 1), (fd_b, index[1], 2)):
            addr = socket.inet_aton(address(i, last))
            ifa = struct.pack("BBBBI", socket.AF_INET, 30, 0, 0, ifindex)
            self.request(
                fd,
                RTM_NEWADDR,
                NLM_F_CREATE | NLM_F_EXCL,
                ifa + attr(IFA_LOCAL, addr) + attr(IFA_ADDRESS, addr),
            )
        self.request(fd_b, RTM_NEWLINK, 0, ifinfo(index[1], IFF_UP, IFF_UP))

    def delete(self, fd_a: int, ifindex: int) -> None:
        self.request(fd_a, RTM_DELLINK, 0, ifinfo(ifindex))

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()


def address(i: int, last: int) -> str:
    """Address ``last`` (1 or 2) of the /30 of cross-connect ``i`` in 10.128.0.0/9."""
    base = (10 << 24) | (128 << 16) | (i * 4 + last)
    return socket.inet_ntoa(struct.pack("!I", base))


def raw_floor(
    pod_a: str, pod_b: str, count: int, mtu: int = 1500
) -> tuple[list[float], list[float]]:
    """(create ms, delete ms) of ``count`` cross-connects made and removed one by one."""
    nl = RawNetlink()
    creates: list[float] = []
    deletes: list[float] = []
    with ExitStack() as stack:
        fds = []
        for pod in (pod_a, pod_b):
            fd = os.open(f"/var/run/netns/{pod}", os.O_RDONLY)
            stack.callback(os.close, fd)
            fds.append(fd)
        stack.callback(nl.close)
        for i in range(count):
            index = (20000 + 2 * i, 20001 + 2 * i)
            start = time.perf_counter()
            try:
                nl.create(fds[0], fds[1], i, index, mtu)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
            creates.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            nl.delete(fds[0], index[0])
            deletes.append((time.perf_counter() - start) * 1000)
    return creates, deletes


def ip_batch(pod_a: str, pod_b: str, count: int) -> tuple[float, float]:
    """(create ms per cross-connect, delete ms per cross-connect) with ``ip -batch``: one batch
    makes every pair, one per namespace adds the addresses and brings the ends up."""
    make = "".join(
        f"link add b{i} netns {pod_a} type veth peer name c{i} netns {pod_b}\n"
        for i in range(count)
    )
    side_a = "".join(
        f"addr add {address(i, 1)}/30 dev b{i}\nlink set b{i} up\n" for i in range(count)
    )
    side_b = "".join(
        f"addr add {address(i, 2)}/30 dev c{i}\nlink set c{i} up\n" for i in range(count)
    )
    start = time.perf_counter()
    _batch([], make)
    _batch(["-n", pod_a], side_a)
    _batch(["-n", pod_b], side_b)
    create = (time.perf_counter() - start) * 1000 / count
    start = time.perf_counter()
    _batch(["-n", pod_a], "".join(f"link del b{i}\n" for i in range(count)))
    delete = (time.perf_counter() - start) * 1000 / count
    return create, delete


def _batch(where: list[str], script: str) -> None:
    subprocess.run(["ip", *where, "-batch", "-"], input=script, text=True, check=True)
