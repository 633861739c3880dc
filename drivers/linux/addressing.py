"""Addresses, routes and permanent neighbours of one pod end, each step with its undo.

Each step goes through a pyroute2 ``IPRoute`` or, on the hot path, an
:class:`~nsm_forwarder.drivers.linux.rtnl.Rtnl` of the same namespace. The three ``add_*``
functions are module-level (looked up at call time by :func:`configure`), so tests can make one
of them fail to check a rollback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nsm_forwarder.drivers.linux.links import ignore_gone, step
from nsm_forwarder.drivers.linux.rtnl import Rtnl
from nsm_forwarder.drivers.linux.undo import UndoStack
from nsm_forwarder.drivers.shapes import End, IPInterface, Neighbor, Route, family

IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253


def add_address(ipr: Any, index: int, addr: IPInterface) -> Callable[[], None]:
    if isinstance(ipr, Rtnl):
        ipr.address(index, addr)
        return ignore_gone(lambda: ipr.address(index, addr, add=False))
    kw: dict[str, Any] = {
        "index": index,
        "address": str(addr.ip),
        "prefixlen": addr.network.prefixlen,
        "family": family(addr.version),
    }
    if addr.version == 6:
        # a point-to-point link whose addresses come from IPAM: usable at once, no DAD wait
        ipr.addr("add", flags=IFA_F_NODAD, **kw)
    else:
        ipr.addr("add", **kw)
    return ignore_gone(lambda: ipr.addr("del", **kw))


def add_route(ipr: Any, index: int, route: Route) -> Callable[[], None]:
    if isinstance(ipr, Rtnl):
        ipr.route(index, route)
        return ignore_gone(lambda: ipr.route(index, route, add=False))
    kw: dict[str, Any] = {"dst": str(route.net), "oif": index, "family": family(route.net.version)}
    if route.gateway is not None:
        kw["gateway"] = str(route.gateway)
    elif route.net.version == 4:
        kw["scope"] = RT_SCOPE_LINK  # like `ip route add PREFIX dev IF`
    ipr.route("add", **kw)
    return ignore_gone(lambda: ipr.route("del", **kw))


def add_neighbor(ipr: Any, index: int, neigh: Neighbor) -> Callable[[], None]:
    if isinstance(ipr, Rtnl):
        ipr.neighbor(index, neigh)
        return ignore_gone(lambda: ipr.neighbor(index, neigh, add=False))
    kw: dict[str, Any] = {
        "dst": str(neigh.ip),
        "ifindex": index,
        "family": family(neigh.ip.version),
    }
    # replace, not add: traffic may already have made the kernel create a (non-permanent) entry
    ipr.neigh("replace", lladdr=neigh.mac, state="permanent", **kw)
    return ignore_gone(lambda: ipr.neigh("del", **kw))


def route_text(route: Route) -> str:
    return f"{route.net} via {route.gateway}" if route.gateway is not None else f"{route.net}"


def configure(ipr: Any, end: End, index: int, undo: UndoStack) -> None:
    """Give interface ``index`` (in ``ipr``'s namespace) the address, routes and neighbours of
    ``end``, pushing the undo of each."""
    on = f"{end.name} in netns {end.inode}"
    if end.addr is not None:
        what = f"add address {end.addr} on {on}"
        with step(what):
            undo.push(what, add_address(ipr, index, end.addr))
    for route in end.routes:
        what = f"add route {route_text(route)} on {on}"
        with step(what):
            undo.push(what, add_route(ipr, index, route))
    for neigh in end.neighbors:
        what = f"add neighbour {neigh.ip} lladdr {neigh.mac} on {on}"
        with step(what):
            undo.push(what, add_neighbor(ipr, index, neigh))
