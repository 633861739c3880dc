"""The VPP interface of each kind of end, built step by step with undo.

Every VPP interface is tagged ``nsm:<forwarder>/<id>:<side>.<role>`` (``sw_interface_tag_add_del``),
so the tag alone says which cross-connect, which end and what kind of object it is:

- ``<side>.afp``: an ``af_packet`` interface on the node end of a veth whose other end is the
  pod's interface (the node end is a Linux interface named :func:`host_name`, tagged
  ``<side>.host``; the pod end is tagged ``<side>`` as with the kernel driver);
- ``<side>.tap``: a tap (``tap_create_v3``) whose host side VPP puts into the pod under the
  requested name (used where ``/dev/vhost-net`` exists);
- ``<side>.memif``: a memif on ``<NSM_BASEDIR>/<workspace>/<socketfile>``, master on the client
  side, slave on the endpoint side;
- ``<side>.vxlan``: the VXLAN tunnel that stands for the remote end ``<side>``.

Each builder pushes the undo of every step onto the caller's :class:`UndoStack` and returns the
new interface's ``sw_if_index``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import random
import stat
from dataclasses import dataclass, field
from typing import Any

from nsm_forwarder.drivers.base import TAG_GROUP, build_group, tag
from nsm_forwarder.drivers.errors import AlreadyExists, DriverError, InvalidRequest
from nsm_forwarder.drivers.linux import addressing, ethtool, netns
from nsm_forwarder.drivers.linux.ends import make_room
from nsm_forwarder.drivers.linux.links import get_link, ignore_gone, step
from nsm_forwarder.drivers.linux.node import NodeNetns
from nsm_forwarder.drivers.linux.pyroute import NetlinkError
from nsm_forwarder.drivers.linux.rtnl import Rtnl
from nsm_forwarder.drivers.linux.sockets import NetnsSockets
from nsm_forwarder.drivers.linux.undo import UndoStack
from nsm_forwarder.drivers.shapes import End, MemifEnd, VxlanTunnel
from nsm_forwarder.drivers.vpp.api import IF_ADMIN_UP, NONE, VppApi, VppRefused, af_packet_args

log = logging.getLogger(__name__)

#: VPP's tag field is a string[64]: 63 bytes and the NUL.
TAG_MAX = 63
MEMIF_ROLE_MASTER, MEMIF_ROLE_SLAVE = 0, 1
MEMIF_MODE_ETHERNET = 0
#: every memif of ours is interface 0 of its own socket
MEMIF_ID = 0
#: VPP's retval for "no such entry" (deleting something already gone).
GONE_RETVALS = frozenset({-2, -6, -3})  # INVALID_SW_IF_INDEX, NO_SUCH_ENTRY, NO_SUCH_FIB
IF_ALREADY_EXISTS = -79
#: ``af_packet_delete``'s only refusal: VPP has no af_packet on that host name
AF_PACKET_GONE = -11  # SYSCALL_ERROR_1
#: veth ifindexes are drawn from here, as the kernel driver's (a clash is drawn again)
FIRST_INDEX, LAST_INDEX = 1 << 20, 1 << 30
MAX_TRIES = 5
_RANDOM = random.SystemRandom()


def vpp_tag(xid: str, side: str, role: str) -> str:
    """The tag of the VPP interface playing ``role`` for end ``side`` of ``xid``."""
    text = tag(xid, f"{side}.{role}")
    if len(text.encode()) > TAG_MAX:
        raise InvalidRequest(
            f"cross-connect id {xid!r} is too long for a VPP interface tag "
            f"({len(text.encode())} bytes with the forwarder name; VPP keeps {TAG_MAX})"
        )
    return text


def host_name(xid: str, side: str) -> str:
    """The node-namespace name of the veth end VPP's af_packet reads (15 bytes, unique per
    forwarder, id and side)."""
    digest = hashlib.sha256(tag(xid, side).encode()).hexdigest()
    return f"nsv{digest[:12]}"


@dataclass
class Context:
    """What every builder needs: the VPP connection, the node namespace, the settings."""

    vpp: VppApi
    node: NodeNetns
    sockets: NetnsSockets
    use_tap: bool = False
    vxlan_port: int = 4789
    _node_rt: Rtnl | None = field(default=None, repr=False)

    def node_rt(self) -> Rtnl:
        """The raw rtnetlink client of the node namespace (made once, kept: the node is
        pinned for good), for the hot path's messages and ioctls there."""
        if self._node_rt is None:
            self._node_rt = Rtnl(netns.netlink_socket(self.node.fd()))
        return self._node_rt


def ignore_gone_vpp(action: Any) -> Any:
    """An undo that treats "already gone" answers of VPP as done."""

    def run() -> None:
        try:
            action()
        except VppRefused as exc:
            if exc.retval not in GONE_RETVALS:
                raise

    return run


def delete_af_packet(ctx: Context, host: str) -> None:
    """Delete VPP's af_packet on Linux interface ``host``; already gone is done."""
    try:
        ctx.vpp.call("af_packet_delete", host_if_name=host)
    except VppRefused as exc:
        if exc.retval != AF_PACKET_GONE:
            raise


def set_up(ctx: Context, sw_if_index: int, what: str) -> None:
    with step(f"set {what} up"):
        ctx.vpp.call("sw_interface_set_flags", sw_if_index=sw_if_index, flags=IF_ADMIN_UP)


def set_tag(ctx: Context, sw_if_index: int, text: str) -> None:
    with step(f"tag VPP interface {sw_if_index} {text}"):
        ctx.vpp.call("sw_interface_tag_add_del", is_add=True, sw_if_index=sw_if_index, tag=text)


# -- kernel-interface ends --------------------------------------------------------------------


def build_kernel_end(ctx: Context, xid: str, end: End, mtu: int, undo: UndoStack) -> int:
    """The pod gets ``end.name`` (tap or veth), configured like the kernel driver's; VPP gets
    the interface on its side. Returns that VPP interface's sw_if_index."""
    pod_fd, ipr_pod = ctx.sockets.get(end.inode)
    rt_pod = ctx.sockets.raw(end.inode)
    if ctx.use_tap:
        make_room(xid, (ipr_pod, end))
        index = _build_tap(ctx, xid, end, mtu, undo)
        with step(f"look up {end.name} in netns {end.inode}"):
            link = get_link(ipr_pod, ifname=end.name)
        if link is None:
            raise DriverError(f"{end.name} is missing from netns {end.inode}")
        pod_index = link.index
    else:
        index, pod_index = _build_veth_af_packet(ctx, xid, end, mtu, pod_fd, rt_pod, undo)
    with step(f"tag and set up {end.name} in netns {end.inode}"):
        rt_pod.set_link(pod_index, alias=tag(xid, end.side), up=True, group=TAG_GROUP)
    # addresses, routes and neighbours go with the interface: the undo that deletes it
    # (pushed above) is all they need
    addressing.configure(rt_pod, end, pod_index, UndoStack())
    return index


def _build_veth_af_packet(
    ctx: Context, xid: str, end: End, mtu: int, pod_fd: int, rt_pod: Rtnl, undo: UndoStack
) -> tuple[int, int]:
    """The veth (node end :func:`host_name`, pod end ``end.name``) and VPP's af_packet on its
    node end, on raw rtnetlink with both ifindexes chosen here (no look-up); (sw_if_index,
    the pod end's ifindex)."""
    host = host_name(xid, end.side)
    rt_node = ctx.node_rt()
    what = f"create veth {host} (node netns) / {end.name} (netns {end.inode})"
    with step(what):
        host_index, pod_index = _create_veth(ctx, xid, end, host, mtu, pod_fd)
    undo.push(
        f"delete veth {host} in the node netns",
        ignore_gone(lambda: rt_node.del_link(host_index)),
    )
    with step(f"tag {host} in the node netns"):
        rt_node.set_link(host_index, alias=tag(xid, f"{end.side}.host"), group=TAG_GROUP)
    with step(f"turn checksum offload off on {host} and {end.name}"):
        ethtool.checksum_offload_off(rt_node.sock.fileno(), host)
        ethtool.checksum_offload_off(rt_pod.sock.fileno(), end.name)
    # pushed first, by name: a create whose reply was lost (the connection dropped) is undone too
    undo.push(
        f"delete VPP af_packet host-{host}",
        lambda: delete_af_packet(ctx, host),
    )
    with step(f"create VPP af_packet on {host}"):
        index = _create_af_packet(ctx, host)
    set_tag(ctx, index, vpp_tag(xid, end.side, "afp"))
    set_up(ctx, index, f"host-{host}")
    return index, pod_index


def _create_veth(
    ctx: Context, xid: str, end: End, host: str, mtu: int, pod_fd: int
) -> tuple[int, int]:
    """Create the veth under random free ifindexes, its node end up; (node, pod) ifindex.

    A name already taken (EEXIST) is looked at only then (:func:`_clear_leftovers`)."""
    for attempt in range(MAX_TRIES):
        indexes = (
            _RANDOM.randrange(FIRST_INDEX, LAST_INDEX),
            _RANDOM.randrange(FIRST_INDEX, LAST_INDEX),
        )
        try:
            ctx.node_rt().new_veth(
                host, indexes[0], end.name, indexes[1], pod_fd, mtu=mtu, group=build_group(xid)
            )
            return indexes
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and attempt == 0:
                _clear_leftovers(ctx, xid, end, host)
            elif exc.code != errno.EBUSY:  # EBUSY: an ifindex is taken; draw again
                raise
    raise DriverError(f"create veth {host}: no free interface index after {MAX_TRIES} tries")


def _clear_leftovers(ctx: Context, xid: str, end: End, host: str) -> None:
    """What an interrupted apply of this id left under the names (the node-side veth with
    its af_packet, the pod end) goes; anybody else's interface refuses the request, before
    anything is deleted."""
    ipr_node = ctx.sockets.keep(ctx.node.fd())
    with step(f"look up {host} in the node netns"):
        stale = get_link(ipr_node, ifname=host)
    if stale is not None and not stale.owned_as(tag(xid, f"{end.side}.host")):
        raise DriverError(f"interface {host} in the node netns is not ours")
    make_room(xid, (ctx.sockets.get(end.inode)[1], end))
    if stale is not None:
        with step(f"delete stale {host} in the node netns and its af_packet"):
            delete_af_packet(ctx, host)
            ignore_gone(lambda: ipr_node.link("del", index=stale.index))()


def _create_af_packet(ctx: Context, host: str) -> int:
    """VPP's af_packet on ``host``; its sw_if_index. One VPP already has on that name is an
    earlier apply's of the same id and end (the name is made from both) whose veth is gone
    (a worker killed before it was tagged): it is deleted and made again."""
    try:
        return int(ctx.vpp.call("af_packet_create_v3", **af_packet_args(host)).sw_if_index)
    except VppRefused as exc:
        if exc.retval != IF_ALREADY_EXISTS:
            raise
    log.debug("deleting the af_packet VPP still has on %s", host)
    ctx.vpp.call("af_packet_delete", host_if_name=host)
    return int(ctx.vpp.call("af_packet_create_v3", **af_packet_args(host)).sw_if_index)


def _build_tap(ctx: Context, xid: str, end: End, mtu: int, undo: UndoStack) -> int:
    path = netns.all_namespaces().get(end.inode)
    if path is None:
        raise DriverError(f"no path to netns {end.inode} for VPP's tap")
    tap_tag = vpp_tag(xid, end.side, "tap")
    undo.push(f"delete VPP tap {tap_tag}", ignore_gone_vpp(lambda: delete_tagged(ctx, tap_tag)))
    with step(f"create VPP tap with {end.name} in netns {end.inode}"):
        reply = ctx.vpp.call(
            "tap_create_v3",
            id=NONE,
            use_random_mac=True,
            host_if_name_set=True,
            host_if_name=end.name,
            host_namespace_set=True,
            host_namespace=path,
            host_mtu_set=bool(mtu),
            host_mtu_size=mtu or 0,
            tag=tap_tag,
        )
    index = int(reply.sw_if_index)
    set_up(ctx, index, f"tap {index}")
    return index


# -- memif ends -------------------------------------------------------------------------------


def build_memif_end(ctx: Context, xid: str, end: MemifEnd, undo: UndoStack) -> int:
    """A memif on the end's socket: master on the client side (the socket's directory is made
    here), slave on the endpoint side (the endpoint listens)."""
    if end.master:
        with step(f"create directory {os.path.dirname(end.socket)}"):
            os.makedirs(os.path.dirname(end.socket), mode=0o755, exist_ok=True)
    socket_id = memif_socket_id(ctx, end.socket)
    if socket_id is None:
        undo.push(
            f"unregister memif socket {end.socket}",
            ignore_gone_vpp(lambda: delete_memif_socket_of(ctx, end.socket)),
        )
        with step(f"register memif socket {end.socket}"):
            reply = ctx.vpp.call(
                "memif_socket_filename_add_del_v2",
                is_add=True,
                socket_id=NONE,
                socket_filename=end.socket,
            )
        socket_id = int(reply.socket_id)
    else:
        _clear_stale_memif(ctx, xid, end, socket_id)
    sid = socket_id
    undo.push(f"delete memif {sid}/0", ignore_gone_vpp(lambda: delete_memif_on(ctx, sid, MEMIF_ID)))
    role = MEMIF_ROLE_MASTER if end.master else MEMIF_ROLE_SLAVE
    with step(f"create memif on {end.socket} ({'master' if end.master else 'slave'})"):
        reply = ctx.vpp.call(
            "memif_create_v2",
            role=role,
            mode=MEMIF_MODE_ETHERNET,
            rx_queues=1,
            tx_queues=1,
            id=MEMIF_ID,
            socket_id=socket_id,
            ring_size=1024,
            buffer_size=2048,
            no_zero_copy=False,
            use_dma=False,
            secret="",
        )
    index = int(reply.sw_if_index)
    set_tag(ctx, index, vpp_tag(xid, end.side, "memif"))
    set_up(ctx, index, f"memif {index}")
    return index


def memif_socket_id(ctx: Context, path: str) -> int | None:
    for detail in ctx.vpp.dump("memif_socket_filename_dump"):
        if str(detail.socket_filename) == path:
            return int(detail.socket_id)
    return None


def _clear_stale_memif(ctx: Context, xid: str, end: MemifEnd, socket_id: int) -> None:
    """A memif of ours for this id on this socket (an interrupted apply) goes; anybody else's
    makes the request fail."""
    for detail in ctx.vpp.dump("memif_dump"):
        if int(detail.socket_id) != socket_id or int(detail.id) != MEMIF_ID:
            continue
        index = int(detail.sw_if_index)
        tags = {str(d.tag) for d in ctx.vpp.dump("sw_interface_dump", sw_if_index=index)}
        if tags - {"", vpp_tag(xid, end.side, "memif")}:
            raise AlreadyExists(f"memif socket {end.socket} is already in use by VPP")
        with step(f"delete stale memif {index} on {end.socket}"):
            ctx.vpp.call("memif_delete", sw_if_index=index)


def delete_memif_on(ctx: Context, socket_id: int, memif_id: int) -> None:
    for detail in ctx.vpp.dump("memif_dump"):
        if int(detail.socket_id) == socket_id and int(detail.id) == memif_id:
            delete_memif(ctx, int(detail.sw_if_index))


def delete_memif(ctx: Context, index: int) -> None:
    """Delete memif ``index``, unregister its socket when no memif uses it any more, and, where
    VPP was the master (it made the socket file, and leaves it behind), remove the file."""
    found = [m for m in ctx.vpp.dump("memif_dump") if int(m.sw_if_index) == index]
    ctx.vpp.call("memif_delete", sw_if_index=index)
    if not found:
        return
    socket_id, master = int(found[0].socket_id), int(found[0].role) == MEMIF_ROLE_MASTER
    path = next(
        (
            str(d.socket_filename)
            for d in ctx.vpp.dump("memif_socket_filename_dump")
            if int(d.socket_id) == socket_id
        ),
        None,
    )
    delete_memif_socket(ctx, socket_id)
    if master and path and path.startswith("/") and memif_socket_id(ctx, path) is None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)


def delete_memif_socket_of(ctx: Context, path: str) -> None:
    socket_id = memif_socket_id(ctx, path)
    if socket_id is not None:
        delete_memif_socket(ctx, socket_id)


def delete_tagged(ctx: Context, text: str) -> None:
    """Delete the tap tagged ``text``, if VPP has one."""
    for detail in ctx.vpp.dump("sw_interface_dump", sw_if_index=NONE):
        if str(detail.tag) == text:
            ctx.vpp.call("tap_delete_v2", sw_if_index=int(detail.sw_if_index))


def delete_memif_socket(ctx: Context, socket_id: int) -> None:
    """Unregister a memif socket no memif uses any more (socket 0 is VPP's default)."""
    if socket_id == 0:
        return
    if any(int(m.socket_id) == socket_id for m in ctx.vpp.dump("memif_dump")):
        return
    ctx.vpp.call("memif_socket_filename_add_del_v2", is_add=False, socket_id=socket_id)


# -- VXLAN ------------------------------------------------------------------------------------


def vxlan_args(ctx: Context, tunnel: VxlanTunnel) -> dict[str, Any]:
    return {
        "instance": NONE,
        "src_address": ipaddress.ip_address(tunnel.local_ip),
        "dst_address": ipaddress.ip_address(tunnel.remote_ip),
        "src_port": ctx.vxlan_port,
        "dst_port": ctx.vxlan_port,
        "mcast_sw_if_index": NONE,
        "encap_vrf_id": 0,
        "decap_next_index": NONE,
        "vni": tunnel.vni,
        "is_l3": False,
    }


def build_vxlan(ctx: Context, xid: str, side: str, tunnel: VxlanTunnel, undo: UndoStack) -> int:
    """The VXLAN tunnel standing for remote end ``side``: local -> remote, the mechanism's VNI,
    the configured UDP port."""
    args = vxlan_args(ctx, tunnel)
    what = f"create VPP vxlan vni {tunnel.vni} {tunnel.local_ip} -> {tunnel.remote_ip}"
    undo.push(
        f"delete VPP vxlan vni {tunnel.vni}",
        ignore_gone_vpp(lambda: ctx.vpp.call("vxlan_add_del_tunnel_v3", is_add=False, **args)),
    )
    with step(what):
        reply = ctx.vpp.call("vxlan_add_del_tunnel_v3", is_add=True, **args)
    index = int(reply.sw_if_index)
    set_tag(ctx, index, vpp_tag(xid, side, "vxlan"))
    set_up(ctx, index, f"vxlan {index}")
    return index


def xconnect(ctx: Context, a: int, b: int, undo: UndoStack) -> None:
    """Join two VPP interfaces with an L2 cross-connect in both directions."""
    for rx, tx in ((a, b), (b, a)):
        with step(f"l2 xconnect {rx} -> {tx}"):
            ctx.vpp.call("sw_interface_set_l2_xconnect", rx_sw_if_index=rx, tx_sw_if_index=tx)
        undo.push(
            f"l2 xconnect {rx} -> {tx} off",
            ignore_gone_vpp(
                lambda rx=rx, tx=tx: ctx.vpp.call(
                    "sw_interface_set_l2_xconnect",
                    rx_sw_if_index=rx,
                    tx_sw_if_index=tx,
                    enable=False,
                )
            ),
        )
