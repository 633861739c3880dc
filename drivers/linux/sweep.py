"""Find every tagged interface in every namespace, and remove the orphans among them."""

from __future__ import annotations

import logging
import os
from typing import Any

from nsm_forwarder.drivers.base import parse_tag, tag
from nsm_forwarder.drivers.errors import NotFound
from nsm_forwarder.drivers.linux import netns
from nsm_forwarder.drivers.linux.links import Link, delete_link, get_link, link_of, step

log = logging.getLogger(__name__)


def tagged_links() -> list[tuple[int, Link, str, str]]:
    """(netns inode, link, xcon id, side) of every interface carrying one of our tags, in every
    reachable namespace (read from the kernel, never a cache)."""
    found = []
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
            if parsed is not None:
                found.append((inode, link, *parsed))
    return found


def sweep_tagged(found: list[dict[str, Any]]) -> int:
    """Delete each ``{"id", "side", "inode", "ifindex"}`` interface that still carries that tag.

    Returns how many were deleted. A namespace or interface that is gone already is skipped;
    an interface whose tag changed meanwhile is left alone.
    """
    deleted = 0
    for entry in found:
        try:
            fd = netns.open_netns(int(entry["inode"]))
        except NotFound:
            continue
        try:
            with netns.iproute_in(fd) as ipr:
                with step(f"look up ifindex {entry['ifindex']} in netns {entry['inode']}"):
                    link = get_link(ipr, index=int(entry["ifindex"]))
                if link is None or link.alias != tag(entry["id"], entry["side"]):
                    continue
                with step(f"delete orphan {link.name} in netns {entry['inode']}"):
                    if not delete_link(ipr, link.index):
                        continue
                deleted += 1
                log.debug(
                    "deleted orphan %s (%s) in netns %d", link.name, link.alias, entry["inode"]
                )
        finally:
            os.close(fd)
    return deleted
