"""KernelDriver: local cross-connects as one veth pair across two pod network namespaces;
remote ones (VXLAN, WireGuard) are built by :mod:`.remote`.

``apply`` creates the pair directly across the namespaces (the source end in the source pod, the
peer in the destination pod), sets MTU, our tag (alias ``nsm:<forwarder>/<id>:<side>`` and
group :data:`~nsm_forwarder.drivers.base.TAG_GROUP`), brings both ends up, adds each end's address,
routes (main table) and permanent neighbours. Every step records its undo; a failure unwinds all
of them and raises the first error, so a failed apply leaves nothing behind.

All netlink traffic goes through sockets opened inside the pod namespaces by a helper thread
(:func:`~nsm_forwarder.drivers.kernel.netns.iproute_in`): no fork, and the calling thread never
changes namespace. Each call opens at most one ``IPRoute`` per namespace and closes it before
returning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from nsm_forwarder.drivers.base import TAG_GROUP, Applied, Plan, parse_tag, set_owner, tag
from nsm_forwarder.drivers.errors import AlreadyExists, DriverError, InvalidRequest, NotFound
from nsm_forwarder.drivers.kernel import netns, wgselect
from nsm_forwarder.drivers.kernel.egress import Egress, find_egress
from nsm_forwarder.drivers.kernel.ops import (
    GONE,
    Link,
    delete_link,
    get_link,
    ignore_gone,
    link_of,
    step,
    to_forwarder_error,
)
from nsm_forwarder.drivers.kernel.remote import (
    DEFAULT_VXLAN_PORT,
    apply_remote,
    remove_remote,
    stop_orphan_daemons,
)
from nsm_forwarder.drivers.kernel.shapes import (
    REMOTE_KINDS,
    SIDES,
    End,
    IPInterface,
    Neighbor,
    Route,
    check_inode,
    family,
    parse_local_plan,
)
from nsm_forwarder.drivers.kernel.stats import read_stats
from nsm_forwarder.drivers.kernel.sweep import sweep_tagged
from nsm_forwarder.drivers.kernel.undo import UndoStack
from nsm_forwarder.drivers.registry import driver_info

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253

# ---------------------------------------------------------------------------------------------
# Kernel steps (module-level so tests can inject failures)


def _add_address(ipr: Any, index: int, addr: IPInterface) -> Callable[[], None]:
    kw: dict[str, Any] = {
        "index": index,
        "address": str(addr.ip),
        "prefixlen": addr.network.prefixlen,
        "family": family(addr.version),
    }
    if addr.version == 6:
        # a point-to-point veth whose addresses come from IPAM: usable at once, no DAD wait
        ipr.addr("add", flags=IFA_F_NODAD, **kw)
    else:
        ipr.addr("add", **kw)
    return ignore_gone(lambda: ipr.addr("del", **kw))


def _add_route(ipr: Any, index: int, route: Route) -> Callable[[], None]:
    kw: dict[str, Any] = {"dst": str(route.net), "oif": index, "family": family(route.net.version)}
    if route.gateway is not None:
        kw["gateway"] = str(route.gateway)
    elif route.net.version == 4:
        kw["scope"] = RT_SCOPE_LINK  # like `ip route add PREFIX dev IF`
    ipr.route("add", **kw)
    return ignore_gone(lambda: ipr.route("del", **kw))


def _add_neighbor(ipr: Any, index: int, neigh: Neighbor) -> Callable[[], None]:
    kw: dict[str, Any] = {
        "dst": str(neigh.ip),
        "ifindex": index,
        "family": family(neigh.ip.version),
    }
    # replace, not add: traffic may already have made the kernel create a (non-permanent) entry
    ipr.neigh("replace", lladdr=neigh.mac, state="permanent", **kw)
    return ignore_gone(lambda: ipr.neigh("del", **kw))


def _route_text(route: Route) -> str:
    return f"{route.net} via {route.gateway}" if route.gateway is not None else f"{route.net}"


# ---------------------------------------------------------------------------------------------


class KernelDriver:
    """The kernel (netlink) data plane; see :class:`nsm_forwarder.drivers.base.Driver`."""

    name = "kernel"

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        #: the egress interface found by ``init`` (None before)
        self.egress: Egress | None = None
        self.vxlan_port = DEFAULT_VXLAN_PORT
        #: how WIREGUARD tunnels are built: wgselect.KERNEL, USERSPACE or None (not offered)
        self.wireguard: str | None = None
        self._node_fd: int | None = None

    # -- init ------------------------------------------------------------------------------

    def init(self, config: dict[str, Any]) -> dict[str, Any]:
        """See :class:`~nsm_forwarder.drivers.base.Driver`; keeps ``config`` for later calls.

        The namespace of the calling thread is the node namespace: remote tunnels keep their
        underlay there. Refuses (EgressNotFound, one line) when no interface of it carries
        ``src_ip``. Chooses the WireGuard backend (``wireguard_backend``, see :mod:`.wgselect`)
        and advertises WIREGUARD only when there is one.
        """
        self.config = dict(config)
        if config.get("owner"):
            set_owner(str(config["owner"]))
        self.vxlan_port = int(config.get("vxlan_port") or DEFAULT_VXLAN_PORT)
        with netns.iproute_in(self.node_fd()) as ipr, step("find the egress interface"):
            self.egress = find_egress(ipr, str(config.get("src_ip") or ""))
        log.debug(
            "egress interface %s (ifindex %d, mtu %d) carries %s",
            self.egress.ifname,
            self.egress.ifindex,
            self.egress.mtu,
            self.egress.ip,
        )
        with step("choose the WireGuard backend"):
            choice = wgselect.choose(str(config.get("wireguard_backend") or wgselect.AUTO))
        self.wireguard = choice.backend
        if choice.backend is None:
            log.debug("not offering WIREGUARD: %s", choice.why)
        else:
            log.debug("WIREGUARD tunnels use %s", choice.why)
        info = driver_info(self.name)
        remote = [m for m in info.remote_mechanisms if m != "WIREGUARD" or choice.backend]
        return {
            "local": list(info.local_mechanisms),
            "remote": remote,
            "egress": self.egress.to_wire(),
            "wireguard": choice.backend,
        }

    def node_fd(self) -> int:
        """An fd of the node namespace: the calling thread's when first asked (``init``)."""
        if self._node_fd is None:
            flags = os.O_RDONLY | os.O_CLOEXEC
            self._node_fd = os.open("/proc/thread-self/ns/net", flags)
        return self._node_fd

    def node_inode(self) -> int:
        return os.fstat(self.node_fd()).st_ino

    # -- apply -----------------------------------------------------------------------------

    def apply(self, plan: Plan) -> Applied:
        if isinstance(plan, dict) and plan.get("kind") in REMOTE_KINDS:
            return apply_remote(self, plan)
        xid, mtu, src, dst = parse_local_plan(plan)
        started = time.perf_counter()
        with ExitStack() as stack:
            fd_src = netns.open_netns(src.inode)
            stack.callback(os.close, fd_src)
            if dst.inode == src.inode:
                fd_dst = fd_src
            else:
                fd_dst = netns.open_netns(dst.inode)
                stack.callback(os.close, fd_dst)
            ipr_src = stack.enter_context(netns.iproute_in(fd_src))
            ipr_dst = (
                ipr_src if dst.inode == src.inode else stack.enter_context(netns.iproute_in(fd_dst))
            )
            self._make_room(xid, (ipr_src, src), (ipr_dst, dst))
            undo = UndoStack()
            try:
                src_index, dst_index = self._build(
                    xid, mtu, src, dst, ipr_src, ipr_dst, fd_dst, undo
                )
            except BaseException as exc:
                log.debug("apply %s failed (%s); rolling back %d steps", xid, exc, len(undo))
                undo.unwind()
                if isinstance(exc, Exception):
                    raise to_forwarder_error(exc, f"apply {xid}") from exc
                raise
            undo.clear()
        log.debug("applied %s in %.1f ms", xid, (time.perf_counter() - started) * 1e3)
        return {
            "id": xid,
            "kind": "local",
            "src": {"inode": src.inode, "name": src.name, "ifindex": src_index},
            "dst": {"inode": dst.inode, "name": dst.name, "ifindex": dst_index},
        }

    def _make_room(self, xid: str, *ends: tuple[Any, End]) -> None:
        """Refuse foreign interfaces with our names; delete stale ones tagged for this id.

        Every end is checked before anything is deleted, so a refusal changes nothing.
        """
        stale: list[tuple[Any, End, Link]] = []
        for ipr, end in ends:
            with step(f"look up {end.name} in netns {end.inode}"):
                link = get_link(ipr, ifname=end.name)
            if link is None:
                continue
            if not link.owned_as(tag(xid, end.side)):
                raise AlreadyExists(f"interface {end.name} already exists in netns {end.inode}")
            stale.append((ipr, end, link))
        for ipr, end, link in stale:
            log.debug("deleting stale %s of %s in netns %d", end.name, xid, end.inode)
            with step(f"delete stale {end.name} in netns {end.inode}"):
                try:
                    ipr.link("del", index=link.index)
                except NetlinkError as exc:
                    if exc.code not in GONE:  # the peer of one deleted just before
                        raise

    def _build(
        self,
        xid: str,
        mtu: int,
        src: End,
        dst: End,
        ipr_src: Any,
        ipr_dst: Any,
        fd_dst: int,
        undo: UndoStack,
    ) -> tuple[int, int]:
        common: dict[str, Any] = {"group": TAG_GROUP}
        if mtu:
            common["mtu"] = mtu
        what = f"create veth {src.name} (netns {src.inode}) / {dst.name} (netns {dst.inode})"
        with step(what):
            # IFF_UP is fine on this end; on the peer it fails (ENOTCONN): brought up below
            ipr_src.link(
                "add",
                ifname=src.name,
                kind="veth",
                state="up",
                peer={"ifname": dst.name, "net_ns_fd": fd_dst, **common},
                **common,
            )
        # deleting one end deletes the pair (and every address, route, neighbour on it)
        undo.push(
            f"delete veth {src.name} in netns {src.inode}",
            ignore_gone(lambda: ipr_src.link("del", ifname=src.name)),
        )

        with step(f"look up new {src.name} in netns {src.inode}"):
            src_link = get_link(ipr_src, ifname=src.name)
        with step(f"look up new {dst.name} in netns {dst.inode}"):
            dst_link = get_link(ipr_dst, ifname=dst.name)
        if src_link is None or dst_link is None:
            raise DriverError(f"{what}: created veth end vanished")
        with step(f"tag {src.name} in netns {src.inode}"):
            ipr_src.link("set", index=src_link.index, ifalias=tag(xid, "src"))
        with step(f"tag and set up {dst.name} in netns {dst.inode}"):
            ipr_dst.link("set", index=dst_link.index, ifalias=tag(xid, "dst"), state="up")

        for ipr, end, index in ((ipr_src, src, src_link.index), (ipr_dst, dst, dst_link.index)):
            self._configure(ipr, end, index, undo)
        return src_link.index, dst_link.index

    def _configure(self, ipr: Any, end: End, index: int, undo: UndoStack) -> None:
        on = f"{end.name} in netns {end.inode}"
        if end.addr is not None:
            what = f"add address {end.addr} on {on}"
            with step(what):
                undo.push(what, _add_address(ipr, index, end.addr))
        for route in end.routes:
            what = f"add route {_route_text(route)} on {on}"
            with step(what):
                undo.push(what, _add_route(ipr, index, route))
        for neigh in end.neighbors:
            what = f"add neighbour {neigh.ip} lladdr {neigh.mac} on {on}"
            with step(what):
                undo.push(what, _add_neighbor(ipr, index, neigh))

    # -- remove ----------------------------------------------------------------------------

    def remove(self, applied: Applied) -> None:
        if not isinstance(applied, dict) or not isinstance(applied.get("id"), str):
            raise InvalidRequest("applied record without an id")
        if applied.get("kind") in REMOTE_KINDS:
            remove_remote(self, applied)
            return
        xid: str = applied["id"]
        started = time.perf_counter()
        for side in SIDES:
            end = applied.get(side)
            if not isinstance(end, dict):
                raise InvalidRequest(f"applied record {xid}: {side} end missing")
            inode = check_inode(end.get("inode"), f"applied record {xid} {side} end")
            name = end.get("name")
            ifindex = end.get("ifindex")
            try:
                fd = netns.open_netns(inode)
            except NotFound:
                log.debug("remove %s: netns %d of %s end is gone", xid, inode, side)
                continue
            try:
                with netns.iproute_in(fd) as ipr:
                    self._remove_end(ipr, xid, side, inode, name, ifindex)
            finally:
                os.close(fd)
        log.debug("removed %s in %.1f ms", xid, (time.perf_counter() - started) * 1e3)

    def _remove_end(
        self, ipr: Any, xid: str, side: str, inode: int, name: Any, ifindex: Any
    ) -> None:
        want = tag(xid, side)
        link: Link | None = None
        if isinstance(name, str) and name:
            with step(f"look up {name} in netns {inode}"):
                link = get_link(ipr, ifname=name)
        if (link is None or not link.owned_as(want)) and isinstance(ifindex, int) and ifindex > 0:
            with step(f"look up ifindex {ifindex} in netns {inode}"):
                link = get_link(ipr, index=ifindex)
        if link is None or not link.owned_as(want):
            if link is not None:
                log.debug(
                    "remove %s: %s in netns %d is not ours (alias %r), left alone",
                    xid,
                    link.name,
                    inode,
                    link.alias,
                )
            return
        with step(f"delete {link.name} in netns {inode}"):
            delete_link(ipr, link.index)

    # -- observe ---------------------------------------------------------------------------

    def stats(self, entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        """See :class:`~nsm_forwarder.drivers.base.Driver`."""
        return read_stats(entries)

    def sweep(self, found: list[dict[str, Any]]) -> int:
        """See :class:`~nsm_forwarder.drivers.base.Driver`.

        Deleting a WireGuard TUN ends its wireguard-go daemon by itself; the daemons of the
        swept ids are stopped explicitly as well, so none is left even if it had not noticed.
        """
        deleted = sweep_tagged(found)
        stop_orphan_daemons(self, found)
        return deleted

    def observe(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for inode, path in netns.all_namespaces().items():
            fd = netns.open_path(path, inode)
            if fd is None:
                continue  # the namespace went away since the scan
            try:
                # the fd pins the namespace: it cannot vanish while it is being read
                with netns.iproute_in(fd) as ipr, step(f"list links in netns {inode}"):
                    links = [link_of(m) for m in ipr.link("dump")]
            finally:
                os.close(fd)
            for link in links:
                parsed = parse_tag(link.alias)
                if parsed is None:
                    continue
                xid, side = parsed
                found.append(
                    {
                        "id": xid,
                        "side": side,
                        "inode": inode,
                        "name": link.name,
                        "ifindex": link.index,
                    }
                )
        return found
