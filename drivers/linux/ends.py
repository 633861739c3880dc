"""One cross-connect end in a pod: make room for it, remove it, reach its namespace.

An end is the interface a pod sees (``End.name`` in the namespace with inode ``End.inode``),
tagged ``nsm:<forwarder>/<id>:<side>`` (:func:`~nsm_forwarder.drivers.base.tag`).
"""

from __future__ import annotations

import logging
from typing import Any

from nsm_forwarder.drivers.base import tag
from nsm_forwarder.drivers.errors import AlreadyExists, NotFound
from nsm_forwarder.drivers.linux.links import GONE, Link, delete_link, get_link, step
from nsm_forwarder.drivers.linux.pyroute import NetlinkError
from nsm_forwarder.drivers.linux.sockets import NetnsSockets
from nsm_forwarder.drivers.shapes import End

log = logging.getLogger(__name__)


def open_pods(sockets: NetnsSockets, *inodes: int) -> dict[int, tuple[int, Any]]:
    """``{inode: (fd, IPRoute)}`` for each namespace named, from ``sockets`` (which keeps
    them). :class:`NotFound` if one of them does not exist."""
    return {inode: sockets.get(inode) for inode in inodes}


def make_room(xid: str, *ends: tuple[Any, End]) -> None:
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


def remove_end(ipr: Any, xid: str, side: str, inode: int, name: Any, ifindex: Any) -> None:
    """Delete the interface of end ``side`` of ``xid`` (by name, else by ifindex) if it carries
    our tag; anything else, or nothing, is left alone."""
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


def remove_end_in(
    sockets: NetnsSockets, inode: int, xid: str, side: str, name: Any, ifindex: Any
) -> None:
    """:func:`remove_end` in namespace ``inode``; a namespace that is gone took the end with
    it."""
    try:
        _, ipr = sockets.get(inode)
    except NotFound:
        log.debug("remove %s: netns %d of the %s end is gone", xid, inode, side)
        return
    remove_end(ipr, xid, side, inode, name, ifindex)
