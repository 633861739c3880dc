"""Remote cross-connects: this node's end, joined to the other node by a VXLAN or WireGuard tunnel.

The tunnel device ends up in the pod namespace under the requested name, with the plan's MTU,
our tag (alias ``nsm:<forwarder>/<id>:<side>``, group ``TAG_GROUP``), and the
end's addresses, routes and neighbours; its underlay (UDP sockets) stays in the node namespace,
the namespace of the worker (the forwarder runs there).

- **VXLAN**: one ``RTM_NEWLINK`` sent on a node-namespace socket with ``IFLA_NET_NS_FD`` = the pod:
  the kernel creates the device directly in the pod, under its final name, while its UDP socket
  (the "link netns") is the node's. Nothing ever appears in the node namespace, so no temporary
  name and no rename are needed, and a name taken in the pod fails before anything exists.
  Local/remote underlay addresses from the plan, VNI, UDP port from config (default 4789), no
  learning, lower device = the egress interface (unless that is a loopback device: then routing
  chooses).
- **WireGuard**: a device under a machine-unique name in the node namespace - a kernel
  ``wireguard`` link (:mod:`.wgkernel`) where the kernel has WireGuard, else the TUN of a
  ``wireguard-go`` daemon (:mod:`.wireguard`), as the driver's ``init`` chose
  (:mod:`.wgselect`). Once configured (generic netlink or the UAPI socket) it gets its MTU and
  tag there (wireguard-go learns the MTU from that event) and is moved into the pod and renamed
  in one ``RTM_NEWLINK``. Either way its UDP socket stays in the node namespace.

Every step pushes its undo; a failure unwinds them all. ``remove`` (applied record or plan)
deletes the tagged pod interface and, for WireGuard, the device if it is still in the node
namespace and its daemon and socket, if any: it also cleans what an interrupted apply left (a
device still in the node namespace, a tagged device in the pod), whichever backend made it.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nsm_forwarder.drivers.base import TAG_GROUP, Applied, Plan, build_group, tag
from nsm_forwarder.drivers.errors import AlreadyExists, DriverError, InvalidRequest
from nsm_forwarder.drivers.kernel import wgkernel, wgselect, wireguard
from nsm_forwarder.drivers.linux import addressing
from nsm_forwarder.drivers.linux.egress import Egress
from nsm_forwarder.drivers.linux.ends import make_room, remove_end_in
from nsm_forwarder.drivers.linux.links import get_link, ignore_gone, step
from nsm_forwarder.drivers.linux.node import NodeNetns
from nsm_forwarder.drivers.linux.pyroute import NetlinkError
from nsm_forwarder.drivers.linux.sockets import NetnsSockets
from nsm_forwarder.drivers.linux.undo import UndoStack, rolled_back
from nsm_forwarder.drivers.shapes import (
    End,
    RemotePlan,
    VxlanTunnel,
    WireguardTunnel,
    check_id,
    check_inode,
    kernel_end,
    remote_side,
)

log = logging.getLogger(__name__)

DEFAULT_VXLAN_PORT = 4789


@dataclass
class Underlay:
    """What the driver's ``init`` found and chose for tunnels on this node."""

    node: NodeNetns
    sockets: NetnsSockets
    egress: Egress | None = None
    vxlan_port: int = DEFAULT_VXLAN_PORT
    #: how WIREGUARD tunnels are built: wgselect.KERNEL, USERSPACE or None (not offered)
    wireguard: str | None = None

    def device(self, xid: str, side: str) -> str:
        """The node-namespace name of the WireGuard device of end ``side`` of ``xid``."""
        return wireguard.device_name(self.node.inode(), tag(xid, side))


def apply_remote(under: Underlay, plan: RemotePlan) -> Applied:
    started = time.perf_counter()
    end = kernel_end(plan.end)
    device = ""
    pod_fd, ipr_pod = under.sockets.get(end.inode)
    ipr_node = under.sockets.keep(under.node.fd())
    make_room(plan.id, (ipr_pod, end))
    if isinstance(plan.tunnel, WireguardTunnel):
        if under.wireguard is None:  # not advertised either (see KernelDriver.init)
            raise InvalidRequest("WIREGUARD is not available on this node")
        device = under.device(plan.id, plan.side)
        _clear_device(ipr_node, device, plan.id, "a stale")
    with rolled_back(f"apply {plan.id}") as undo:
        if isinstance(plan.tunnel, VxlanTunnel):
            index = _build_vxlan(under, plan, plan.tunnel, ipr_node, ipr_pod, pod_fd, undo)
        else:
            index = _build_wireguard(under, plan, device, ipr_node, ipr_pod, pod_fd, undo)
        with step(f"tag and set up {end.name} in netns {end.inode}"):
            try:
                ipr_pod.link(
                    "set",
                    index=index,
                    ifalias=tag(plan.id, plan.side),
                    group=TAG_GROUP,
                    state="up",
                )
            except NetlinkError as exc:
                # a kernel WireGuard device binds its listen port only now
                if exc.code == errno.EADDRINUSE and isinstance(plan.tunnel, WireguardTunnel):
                    raise wireguard.port_in_use(plan.tunnel.listen_port) from None
                raise
        addressing.configure(ipr_pod, end, index, undo)
    log.debug(
        "applied %s (%s) in %.1f ms", plan.id, plan.kind, (time.perf_counter() - started) * 1e3
    )
    return {
        "id": plan.id,
        "kind": plan.kind,
        "side": plan.side,
        "local": {"inode": end.inode, "name": end.name, "ifindex": index},
        "device": device,
        "backend": under.wireguard if device else None,
    }


def _build_vxlan(
    under: Underlay,
    plan: RemotePlan,
    tunnel: VxlanTunnel,
    ipr_node: Any,
    ipr_pod: Any,
    pod_fd: int,
    undo: UndoStack,
) -> int:
    end = kernel_end(plan.end)
    port = under.vxlan_port
    v6 = tunnel.local_ip.version == 6
    kw: dict[str, Any] = {
        "vxlan_id": tunnel.vni,
        "vxlan_local6" if v6 else "vxlan_local": str(tunnel.local_ip),
        "vxlan_group6" if v6 else "vxlan_group": str(tunnel.remote_ip),
        "vxlan_port": port,
        "vxlan_learning": 0,
    }
    egress = under.egress
    if egress is not None and not egress.loopback:
        kw["vxlan_link"] = egress.ifindex
    if plan.mtu:
        kw["mtu"] = plan.mtu
    what = (
        f"create vxlan {end.name} in netns {end.inode} (vni {tunnel.vni}, "
        f"{tunnel.local_ip} -> {tunnel.remote_ip}, port {port})"
    )
    with step(what):
        try:
            ipr_node.link(
                "add",
                ifname=end.name,
                kind="vxlan",
                net_ns_fd=pod_fd,
                group=build_group(plan.id),
                **kw,
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and get_link(ipr_pod, ifname=end.name) is None:
                raise AlreadyExists(
                    f"{what}: VNI {tunnel.vni} is already used by another VXLAN device on this "
                    f"node (UDP port {port})"
                ) from None
            raise
    return _in_pod(ipr_pod, end, what, undo)


def _in_pod(ipr_pod: Any, end: End, what: str, undo: UndoStack) -> int:
    """The tunnel device now in the pod under ``end.name``: undo = delete it; its ifindex."""
    undo.push(
        f"delete {end.name} in netns {end.inode}",
        _delete_by_name(ipr_pod, end.name),
    )
    with step(f"look up {end.name} in netns {end.inode}"):
        link = get_link(ipr_pod, ifname=end.name)
    if link is None:
        raise DriverError(f"{what}: the device vanished")
    return link.index


def _build_wireguard(
    under: Underlay,
    plan: RemotePlan,
    device: str,
    ipr_node: Any,
    ipr_pod: Any,
    pod_fd: int,
    undo: UndoStack,
) -> int:
    end = kernel_end(plan.end)
    tunnel = plan.tunnel
    assert isinstance(tunnel, WireguardTunnel)
    peer = f"{tunnel.remote_ip}:{tunnel.remote_port}"
    configure = f"configure {device}: listen port {tunnel.listen_port}, peer {peer}"
    if under.wireguard == wgselect.KERNEL:
        undo.push(f"delete {device} in the node netns", _delete_by_name(ipr_node, device))
        with step(f"create kernel WireGuard device {device} in the node netns"):
            wgkernel.create(ipr_node, device)
        with step(configure):
            wgkernel.configure(under.node.fd(), device, tunnel)
    else:
        with step(f"check that UDP port {tunnel.listen_port} is free"):
            wireguard.check_port(tunnel.listen_port)
        # pushed first: a start that fails half-way (a launcher timeout) may still leave a daemon
        undo.push(f"stop {wireguard.BINARY} {device}", lambda: wireguard.stop(device))
        with step(f"start {wireguard.BINARY} {device}"):
            wireguard.start(device)
        with step(configure):
            # the daemon answers only once it has the TUN device: safe to move it after this
            wireguard.configure(device, tunnel)
    with step(f"look up {device} in the node netns"):
        link = get_link(ipr_node, ifname=device)
    if link is None:
        raise DriverError(f"WireGuard device {device} is missing from the node netns")
    changes: dict[str, Any] = {"ifalias": tag(plan.id, plan.side), "group": TAG_GROUP}
    if plan.mtu:
        changes["mtu"] = plan.mtu
    with step(f"tag {device} in the node netns"):
        ipr_node.link("set", index=link.index, **changes)
    what = f"move {device} into netns {end.inode} as {end.name}"
    with step(what):
        ipr_node.link("set", index=link.index, net_ns_fd=pod_fd, ifname=end.name)
    return _in_pod(ipr_pod, end, what, undo)


def _delete_by_name(ipr: Any, name: str) -> Callable[[], None]:
    return ignore_gone(lambda: ipr.link("del", ifname=name))


def _clear_device(ipr_node: Any, device: str, xid: str, which: str) -> None:
    """Remove WireGuard device ``device`` from the node namespace (still there after an
    interrupted apply) with its wireguard-go daemon and files, whichever backend made it."""
    with step(f"stop {which} {wireguard.BINARY} {device}"):
        if wireguard.stop(device):
            log.debug("stopped %s %s %s of %s", which, wireguard.BINARY, device, xid)
    with step(f"delete {which} {device} in the node netns"):
        _delete_by_name(ipr_node, device)()


def remove_remote(under: Underlay, record: Applied | Plan) -> None:
    """Remove what an applied record (or a plan, maybe half applied) of a remote kind names."""
    xid = check_id(record.get("id"))
    side = remote_side(record)
    started = time.perf_counter()
    end = record.get("local")
    if not isinstance(end, dict):
        raise InvalidRequest(f"record {xid}: local end missing")
    inode = check_inode(end.get("inode"), f"record {xid} local end")
    remove_end_in(under.sockets, inode, xid, side, end.get("name"), end.get("ifindex"))
    if record.get("kind") == "wireguard":
        device = record.get("device") or under.device(xid, side)
        _clear_device(under.sockets.keep(under.node.fd()), str(device), xid, "the")
    log.debug("removed %s in %.1f ms", xid, (time.perf_counter() - started) * 1e3)


def stop_orphan_daemons(under: Underlay, found: list[dict[str, Any]]) -> int:
    """Stop the wireguard-go daemons of swept orphans (``observe`` entries) and remove their
    files (a daemon whose TUN was just deleted may have exited already); how many were
    running."""
    running = wireguard.running()
    stopped = 0
    for entry in found:
        try:
            device = under.device(entry["id"], entry["side"])
        except (KeyError, TypeError):
            continue
        try:
            if wireguard.stop(device, found=running.get(device, [])):
                stopped += 1
        except DriverError as exc:
            log.warning("orphan %s: %s", device, exc)
    return stopped
